-- POST one fixed JSON body on every request and print a JSON summary at the end.
-- Body file and auth header come from the environment (or the script arguments):
--   WRK_BODY_FILE=/path/body.json WRK_AUTH="Bearer kn_..." wrk -s post.lua URL
--   wrk -s post.lua URL -- /path/body.json "Bearer kn_..."

local body_file = os.getenv("WRK_BODY_FILE")
local auth = os.getenv("WRK_AUTH")

function init(args)
  if args[1] ~= nil and args[1] ~= "" then body_file = args[1] end
  if args[2] ~= nil and args[2] ~= "" then auth = args[2] end
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
