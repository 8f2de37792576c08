#!/usr/bin/env bash
# Offline checks of deploy/ and docker-compose.yml: nothing here needs a Docker engine or a
# Kubernetes cluster. Each optional tool that is missing is reported as SKIP, not as a failure;
# kubernetes-validate is required (pip install kubernetes-validate).
#
#   bash deploy/validate.sh            # from the repository root
#   PYTHON=/path/to/python KUBERNETES_VALIDATE=/path/to/kubernetes-validate bash deploy/validate.sh
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
need = {"postgres", "redis", "s3", "s3-init", "migrate", "api", "worker", "monitor", "prometheus"}
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
assert s["prometheus"]["profiles"] == ["monitoring"]
PY
then ok "docker-compose.yml parses and has the expected services and conditions"
else bad "docker-compose.yml structure"; fi

compose=""
if docker compose version >/dev/null 2>&1; then compose="docker compose"
elif docker-compose version 2>/dev/null | grep -q "v2\."; then compose="docker-compose"; fi
if [ -n "$compose" ]; then
  if $compose -f docker-compose.yml --profile monitoring config -q; then ok "$compose config"
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

# --- Prometheus, SeaweedFS helpers, Dockerfile --------------------------------------------
if command -v promtool >/dev/null 2>&1; then
  # promtool checks that the scrape token file exists: point it at a scratch one.
  scratch=$(mktemp -d)
  echo token > "$scratch/konan-metrics-token"
  sed "s#/etc/prometheus/konan-metrics-token#$scratch/konan-metrics-token#" \
    deploy/prometheus/prometheus.yml > "$scratch/prometheus.yml"
  if promtool check config "$scratch/prometheus.yml" >/dev/null; then ok "promtool check config"
  else bad "promtool check config"; fi
  rm -rf "$scratch"
else
  skip "promtool not installed"
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
