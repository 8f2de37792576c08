-- POST one fixed JSON body, each request with its own X-Request-Id, and write the ids of the
-- 2xx answers (as the server echoed them) to a file at the end, one per line.
--   WRK_BODY_FILE=body.json WRK_AUTH="Bearer kn_..." WRK_ID_PREFIX=r1 WRK_IDS_FILE=ids.txt \
--     wrk -s post_ids.lua URL
-- Ids are <prefix>-<thread>-<counter>: unique across threads and runs with distinct prefixes.

local threads = {}
local next_thread = 1

function setup(thread)
  thread:set("thread_no", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
  body = f:read("*a")
  f:close()
  prefix = string.format("%s-%d-", os.getenv("WRK_ID_PREFIX") or "r", thread_no)
  counter = 0
  ok_ids = {}
  ok_count = 0
  headers = {["Content-Type"] = "application/json"}
  local auth = os.getenv("WRK_AUTH")
  if auth ~= nil and auth ~= "" then headers["Authorization"] = auth end
end

function request()
  counter = counter + 1
  headers["X-Request-Id"] = prefix .. counter
  return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, _body)
  if status >= 200 and status < 300 then
    ok_count = ok_count + 1
    ok_ids[ok_count] = hdrs["x-request-id"] or hdrs["X-Request-Id"] or "?"
  end
end

function done(summary, latency, requests)
  local out = assert(io.open(os.getenv("WRK_IDS_FILE"), "wb"))
  local sent = 0
  for _, t in ipairs(threads) do
    local ids = t:get("ok_ids")
    sent = sent + t:get("counter")
    for i = 1, #ids do out:write(ids[i], "\n") end
  end
  out:close()
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "sent": %d, "duration_us": %d, "bytes": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, sent, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
