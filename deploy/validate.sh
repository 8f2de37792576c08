#!/usr/bin/env bash
# Offline checks of deploy/ and docker-compose.yml: nothing here needs a Docker engine or a
# Kubernetes cluster. Each optional tool that is missing is reported as SKIP, not as a failure;
# kubernetes-validate is required (pip install kubernetes-validate).
#
#   bash deploy/validate.sh            # from the repository root
#   PYTHON=/path/to/python KUBERNETES_VALIDATE=/path/to/kubernetes-validate \
#     PROMTOOL=/path/to/promtool bash deploy/validate.sh
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
KV=${KUBERNETES_VALIDATE:-$(dirname "$PYTHON")/kubernetes-validate}
[ -x "$KV" ] || KV=$(command -v kubernetes-validate || true)

failures=0
ok() { echo "ok    $*"; }
bad() { echo "FAIL  $*"; failures=$((failures + 1)); }
skip() { echo "SKIP  $*"; }

# Placeholders so that ${VAR:?} interpolation in docker-compose.yml resolves.
export KONAN_AUTH__SECRET_KEY=validate-only KONAN_ADMIN_PASSWORD=validate-only

# --- docker-compose.yml -------------------------------------------------------------------
if "$PYTHON" - <<'PY'
import sys, yaml
d = yaml.safe_load(open("docker-compose.yml"))
s = d["services"]
need = {"postgres", "redis", "s3", "s3-init", "migrate", "api", "worker", "monitor", "prometheus", "grafana"}
missing = need - set(s)
assert not missing, f"services missing: {missing}"
for name in ("api", "worker", "monitor"):
    deps = s[name]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully", name
    assert deps["postgres"]["condition"] == "service_healthy", name
    assert deps["redis"]["condition"] == "service_healthy", name
    env = s[name]["environment"]
    assert env["KONAN_MODE"] == "scale-out", name
    assert ":?" in env["KONAN_AUTH__SECRET_KEY"] and ":?" in env["KONAN_ADMIN_PASSWORD"], name
# Observability is opt-in: the default `docker compose up` starts neither service.
for name in ("prometheus", "grafana"):
    assert s[name]["profiles"] == ["observability"], name
mounts = " ".join(s["prometheus"]["volumes"] + s["grafana"]["volumes"])
for path in ("deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml",
             "deploy/grafana/provisioning", "deploy/grafana/konan.json"):
    assert "./" + path + ":" in mounts, f"{path} is not mounted"
PY
then ok "docker-compose.yml parses and has the expected services and conditions"
else bad "docker-compose.yml structure"; fi

compose=""
if docker compose version >/dev/null 2>&1; then compose="docker compose"
elif docker-compose version 2>/dev/null | grep -q "v2\."; then compose="docker-compose"; fi
if [ -n "$compose" ]; then
  if $compose -f docker-compose.yml --profile observability config -q; then ok "$compose config"
  else bad "$compose config"; fi
  for var in KONAN_AUTH__SECRET_KEY KONAN_ADMIN_PASSWORD; do
    if env -u "$var" $compose -f docker-compose.yml config -q >/dev/null 2>&1; then
      bad "compose accepted a missing $var"
    else ok "compose refuses to start without $var"; fi
  done
else
  skip "docker compose v2 not installed: compose config not checked"
fi

# --- Kubernetes manifests -----------------------------------------------------------------
if [ -n "$KV" ] && [ -x "$KV" ]; then
  for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    if "$KV" --strict --quiet "$f"; then ok "kubernetes-validate --strict $f"
    else bad "kubernetes-validate $f"; fi
  done
else
  bad "kubernetes-validate not found (pip install kubernetes-validate)"
fi
if command -v kubectl >/dev/null 2>&1; then
  rendered=$(mktemp --suffix=.yaml)
  if kubectl kustomize deploy/kubernetes >"$rendered" && { [ -z "$KV" ] || "$KV" --strict --quiet "$rendered"; }; then
    ok "kubectl kustomize deploy/kubernetes renders and validates"
  else bad "kubectl kustomize deploy/kubernetes"; fi
  rm -f "$rendered"
else
  skip "kubectl not installed: kustomization.yaml not rendered"
fi

# --- Prometheus, Grafana, SeaweedFS helpers, Dockerfile -----------------------------------
if "$PYTHON" - <<'PY'
import json, yaml
d = json.load(open("deploy/grafana/konan.json"))
assert d["schemaVersion"] >= 39, d["schemaVersion"]
for f in ("deploy/grafana/provisioning/datasources/prometheus.yml",
          "deploy/grafana/provisioning/dashboards/konan.yml"):
    assert yaml.safe_load(open(f))["apiVersion"] == 1, f
PY
then ok "deploy/grafana: dashboard JSON and provisioning YAML parse"
else bad "deploy/grafana"; fi

PROMTOOL=${PROMTOOL:-$(command -v promtool || true)}
if [ -n "$PROMTOOL" ] && [ -x "$PROMTOOL" ]; then
  # promtool checks that the scrape token file exists: point it at a scratch one. The rule file
  # is found next to the config, so it is copied there too.
  scratch=$(mktemp -d)
  echo token > "$scratch/konan-metrics-token"
  cp deploy/prometheus/alerts.yml "$scratch/alerts.yml"
  for conf in prometheus.yml prometheus-kubernetes.yml; do
    sed -e "s#/etc/prometheus/konan-metrics-token#$scratch/konan-metrics-token#" \
        -e "s#/etc/prometheus/secrets/konan-metrics-token#$scratch/konan-metrics-token#" \
      "deploy/prometheus/$conf" > "$scratch/$conf"
    if out=$("$PROMTOOL" check config "$scratch/$conf" 2>&1); then ok "promtool check config $conf"
    elif grep -q "field kubernetes_sd_configs not found" <<<"$out"; then
      # Debian's prometheus package is built without Kubernetes service discovery.
      skip "promtool check config $conf: this promtool has no kubernetes_sd_configs"
    else echo "$out"; bad "promtool check config $conf"; fi
  done
  if "$PROMTOOL" check rules deploy/prometheus/alerts.yml >/dev/null; then
    ok "promtool check rules alerts.yml"
  else bad "promtool check rules alerts.yml"; fi
  if (cd deploy/prometheus && "$PROMTOOL" test rules alerts_test.yml >/dev/null); then
    ok "promtool test rules alerts_test.yml"
  else bad "promtool test rules alerts_test.yml"; fi
  # The dashboard's queries, with Grafana's variables filled in, as recording rules: promtool
  # parses each one as PromQL.
  if "$PYTHON" - "$scratch/dashboard-rules.yml" <<'PY'
import json, sys, yaml
d = json.load(open("deploy/grafana/konan.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
rules = [
    {"record": f"konan:dashboard_query_{i}",
     "expr": e.replace("$__rate_interval", "1m").replace("$deployment", ".*")}
    for i, e in enumerate(exprs)
]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
PY
  then
    if "$PROMTOOL" check rules "$scratch/dashboard-rules.yml" >/dev/null; then
      ok "promtool parses every query of deploy/grafana/konan.json"
    else bad "a query of deploy/grafana/konan.json is not valid PromQL"; fi
  else bad "could not extract the queries of deploy/grafana/konan.json"; fi
  rm -rf "$scratch"
else
  skip "promtool not installed: Prometheus configs, alert rules and dashboard queries not checked"
fi
if sh -n deploy/seaweedfs/entrypoint.sh && "$PYTHON" -m json.tool deploy/seaweedfs/s3.json >/dev/null \
   && "$PYTHON" -c "import ast, sys; ast.parse(open(sys.argv[1]).read())" deploy/seaweedfs/create_bucket.py; then
  ok "deploy/seaweedfs: entrypoint.sh, s3.json, create_bucket.py parse"
else bad "deploy/seaweedfs"; fi
if command -v hadolint >/dev/null 2>&1; then
  if hadolint deploy/Dockerfile; then ok "hadolint deploy/Dockerfile"; else bad "hadolint"; fi
else
  skip "hadolint not installed"
fi

echo
if [ "$failures" -gt 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all deploy checks passed"
