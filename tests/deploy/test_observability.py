"""deploy/grafana/konan.json and deploy/prometheus/alerts.yml ask only for metrics Konan exports.

Every PromQL expression of the dashboard and of the alert rules is parsed for its metric names,
and each name must be a series that the process behind the selector's `job` really exposes.
What each process exposes is read from prometheus_client itself, never from a list kept here:

* konan-model-servers: a real `Replica`'s own registry (ServingMetrics and the gauges the
  replica adds) plus the process-wide registry of a fresh interpreter that imported the model
  server the way `python -m konan.serving` does;
* konan-monitor: a real scrape of a running `konan monitor` (KONAN_MONITORING__METRICS_PORT);
* konan-worker: a real scrape of a running `konan worker` (KONAN_QUEUE__WORKER_METRICS_PORT);
* konan-api: a real scrape of the control plane's /metrics.

A renamed metric therefore fails this test until the dashboard and the rules follow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from konan.backends.queue.celery_app import TASK_MODULES
from konan.backends.runtimes.kubernetes import ADMIN_PORT, DEPLOYMENT_LABEL, render
from konan.core.settings import Settings
from konan.db import heartbeats, migrate
from konan.db.engine import make_engine
from konan.monitoring.spool import SpoolLimits
from konan.server.health import HEARTBEAT_WINDOW
from konan.serving.server import Options, Replica
from tests.backends.runtime_harness import make_desired, make_spec
from tests.cli.metrics_support import (
    clean_env,
    free_port,
    konan_process,
    scrape,
    wait_for,
    wait_for_metrics,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/konan.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS_CONFIGS = [
    ROOT / "deploy/prometheus/prometheus.yml",
    ROOT / "deploy/prometheus/prometheus-kubernetes.yml",
]
API_MANIFEST = ROOT / "deploy/kubernetes/api.yaml"

# Series Prometheus makes itself: `up` per target, `ALERTS` per pending or firing rule.
PROMETHEUS_SERIES = {"up", "ALERTS"}
COMPOSE = ROOT / "docker-compose.yml"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the containers' metrics ports bind to
MONITOR_MANIFEST = ROOT / "deploy/kubernetes/monitor.yaml"
WORKER_MANIFEST = ROOT / "deploy/kubernetes/worker.yaml"

_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


# ---- what the processes expose -----------------------------------------------------------------


def series_names(families: dict[str, str]) -> set[str]:
    """The sample names a scrape shows for metric families {name: type}: counters as
    <name>_total, histograms as <name>_bucket/_sum/_count, summaries as <name>/_sum/_count."""
    names: set[str] = set()
    for name, kind in families.items():
        if kind == "counter":
            names.add(f"{name}_total")
        elif kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif kind == "summary":
            names.update((name, f"{name}_sum", f"{name}_count"))
        elif kind == "info":
            names.add(f"{name}_info")
        else:
            names.add(name)
    return names


def families_of(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


_LIST_REGISTRY = """
import importlib, json, sys
from prometheus_client import REGISTRY
for module in sys.argv[1:]:
    importlib.import_module(module)
print(json.dumps({family.name: family.type for family in REGISTRY.collect()}))
"""


def process_registry(*modules: str) -> dict[str, str]:
    """The default registry of a fresh interpreter that imported `modules`: what a process
    running them exports besides its own registries."""
    done = subprocess.run(
        [sys.executable, "-c", _LIST_REGISTRY, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    families: dict[str, str] = json.loads(done.stdout)
    return families


@pytest.fixture(scope="module")
def model_server_series(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    root = tmp_path_factory.mktemp("replica")
    spec = make_spec(1, deployment="churn-live")
    spec_path = root / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    replica = Replica(spec_path, spec, Settings(data_dir=root / "data"), Options(spec=spec_path))
    try:
        own = families_of(generate_latest(replica.metrics.registry).decode())
    finally:
        replica.close()
    return series_names(own) | series_names(
        process_registry("konan.serving.__main__", "konan.serving.server")
    )


@pytest.fixture(scope="module")
def background_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded data dir with a migrated database, shared by the monitor and the worker."""
    data = tmp_path_factory.mktemp("background") / "data"
    data.mkdir()
    engine = make_engine(f"sqlite:///{data / 'konan.db'}")
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return data


def _scrape_running(
    args: list[str], component: str, setting: str, data_dir: Path, log: Path
) -> str:
    """/metrics of a real `konan <args>` process, scraped on the port `setting` names."""
    port = free_port()
    env = clean_env(KONAN_DATA_DIR=str(data_dir), **{setting: str(port)})
    engine = make_engine(f"sqlite:///{data_dir / 'konan.db'}")
    try:
        with konan_process(args, env, log) as process:
            wait_for_metrics(process, port, log)

            # Scrape once the process is up (Celery imports the task modules while it starts).
            def _reported() -> bool:
                with Session(engine) as session:
                    return heartbeats.alive(session, component, HEARTBEAT_WINDOW)

            wait_for(_reported, 60, f"the {component}'s first heartbeat")
            text = scrape(port)
            assert text is not None
    finally:
        engine.dispose()
    return text


@pytest.fixture(scope="module")
def monitor_text(background_data_dir: Path) -> str:
    return _scrape_running(
        ["monitor"],
        "monitor",
        "KONAN_MONITORING__METRICS_PORT",
        background_data_dir,
        background_data_dir.parent / "monitor.log",
    )


@pytest.fixture(scope="module")
def worker_text(background_data_dir: Path) -> str:
    return _scrape_running(
        ["worker", "--beat", "--loglevel", "WARNING"],
        "worker",
        "KONAN_QUEUE__WORKER_METRICS_PORT",
        background_data_dir,
        background_data_dir.parent / "worker.log",
    )


@pytest.fixture(scope="module")
def monitor_series(monitor_text: str) -> set[str]:
    return series_names(families_of(monitor_text))


@pytest.fixture(scope="module")
def worker_series(worker_text: str) -> set[str]:
    return series_names(families_of(worker_text))


@pytest.fixture
def api_text(client: TestClient, admin_token: str) -> str:
    client.get("/healthz")
    client.get("/api/v1/models", headers={"Authorization": f"Bearer {admin_token}"})
    response = client.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture
def api_series(api_text: str) -> set[str]:
    return series_names(families_of(api_text))


# ---- what the dashboard and the rules ask for ----------------------------------------------------


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs() -> list[str]:
    exprs = [
        target["expr"]
        for panel in all_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.+),\s*(" + _IDENT + r")\)", text.strip())
            assert match, f"variable {variable['name']}: unexpected query {text!r}"
            exprs.append(match.group(1))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def metric_uses(expr: str) -> list[tuple[str, str | None]]:
    """(metric name, job matcher or None) for every series selector in a PromQL expression."""
    jobs: dict[str, set[str | None]] = {}
    for name, matchers in re.findall(rf"({_IDENT})\s*\{{([^}}]*)\}}", expr):
        found = re.search(r'\bjob\s*=\s*"([^"]*)"', matchers)
        jobs.setdefault(name, set()).add(found.group(1) if found else None)
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    bare = re.sub(r"\{[^}]*\}", " ", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # ranges
    bare = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare
    )  # grouping labels
    uses: list[tuple[str, str | None]] = []
    for match in re.finditer(rf"(?<![\w$.]){_IDENT}", bare):
        name = match.group(0)
        if name.lower() in _KEYWORDS or re.match(r"\s*\(", bare[match.end() :]):
            continue  # a keyword, or a function / aggregation called here
        for job in sorted(jobs.get(name, {None}), key=str):
            uses.append((name, job))
    return uses


def test_metric_uses_reads_names_jobs_and_suffixes() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (deployment, le) (rate(konan_serving_latency_seconds_"
        'bucket{job="konan-model-servers", deployment=~"$deployment"}[$__rate_interval]))) '
        '> 0.8 * 1073741824 and on (deployment) up == 0 or label_replace(x_total, "a", "$1", '
        '"b", "(.*)")'
    )
    assert metric_uses(expr) == [
        ("konan_serving_latency_seconds_bucket", "konan-model-servers"),
        ("up", None),
        ("x_total", None),
    ]
    assert series_names({"c": "counter", "h": "histogram", "g": "gauge"}) == {
        "c_total",
        "h_bucket",
        "h_sum",
        "h_count",
        "g",
    }


# ---- the tests -----------------------------------------------------------------------------------


def all_uses() -> list[tuple[str, str, str | None]]:
    """(where, metric, job) for every metric the dashboard and the rules query."""
    uses = [("dashboard", name, job) for e in dashboard_exprs() for name, job in metric_uses(e)]
    uses += [
        (f"alert {rule['alert']}", name, job)
        for rule in alert_rules()
        for name, job in metric_uses(rule["expr"])
    ]
    return uses


def test_every_queried_metric_is_exported_by_the_process_its_job_scrapes(
    api_series: set[str],
    model_server_series: set[str],
    monitor_series: set[str],
    worker_series: set[str],
) -> None:
    exported = {
        "konan-api": api_series,
        "konan-model-servers": model_server_series,
        "konan-monitor": monitor_series,
        "konan-worker": worker_series,
    }
    # The sources really were read (a broken import would leave a set without Konan's names).
    assert "konan_serving_requests_total" in model_server_series
    assert "konan_serving_busy_seconds_total" in model_server_series  # added by Replica
    assert "konan_log_shed_total" in model_server_series  # the producer in that process
    assert "konan_monitor_backlog_records" in monitor_series
    assert "konan_alerts_firing" in worker_series
    assert "konan_heartbeat_age_seconds" in api_series
    assert "http_requests_total" in api_series

    uses = all_uses()
    assert len(uses) > 30
    problems = []
    for where, name, job in uses:
        if name in PROMETHEUS_SERIES:
            continue
        if job is None:
            # Every Konan process exports the pipeline's and the alerts' names (at zero where
            # it does not own them), so a query without a job would mix them up.
            problems.append(f"{where}: {name} has no job matcher")
        elif job not in exported:
            problems.append(f"{where}: {name} asks for unknown job {job!r}")
        elif name not in exported[job]:
            problems.append(f"{where}: {name} is not exported by {job}")
    assert problems == []


def test_jobs_are_the_scrape_configs_jobs() -> None:
    configured = {
        job["job_name"]
        for path in PROMETHEUS_CONFIGS
        for job in yaml.safe_load(path.read_text())["scrape_configs"]
    }
    used = {job for _, _, job in all_uses() if job is not None}
    assert used <= configured
    for path in PROMETHEUS_CONFIGS:
        assert yaml.safe_load(path.read_text())["rule_files"] == ["alerts.yml"]


def test_dashboard_loads_with_unique_ids_and_the_datasource_variable() -> None:
    doc = dashboard()
    assert doc["schemaVersion"] >= 39
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    deployment = variables["deployment"]
    assert deployment["type"] == "query"
    assert deployment["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert "label_values(" in deployment["query"]["query"]

    panels = list(all_panels(doc["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), titles
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    queried = [p for p in panels if p["type"] != "row"]
    assert queried
    assert all(p.get("targets") for p in queried)


def test_dashboard_filters_model_server_panels_by_the_deployment_variable() -> None:
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            for selector in re.findall(r"\{[^}]*\}", target["expr"]):
                if 'job="konan-model-servers"' in selector:
                    assert 'deployment=~"$deployment"' in selector, panel["title"]


def test_the_dashboard_covers_what_operators_asked_for() -> None:
    text = " ".join(dashboard_exprs())
    for needed in (
        "konan_serving_requests_total",  # request rate, status classes
        "histogram_quantile(0.99, sum by (deployment, le) (rate(konan_serving_latency_seconds",
        "konan_serving_rejections_total",
        "konan_serving_busy_seconds_total",  # concurrency
        "konan_serving_ready",  # replicas
        "konan_log_shed_total",
        "konan_log_spooled_total",
        "konan_monitor_ingested_total",
        "konan_monitor_backlog_records",
        "konan_monitor_lag_seconds",
        "konan_monitor_dead_lettered_total",
        "konan_alerts_firing",
        "konan_serving_key_refresh_failures_total",
    ):
        assert needed in text, needed


def test_alert_rules_have_for_severity_and_annotations() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_spool_alert_threshold_is_80_percent_of_the_spool_budget() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "KonanLogSpoolFilling"]
    match = re.search(r">\s*([0-9.]+)\s*\*\s*([0-9]+)", rule["expr"])
    assert match, rule["expr"]
    assert float(match.group(1)) * int(match.group(2)) == pytest.approx(
        0.8 * SpoolLimits().max_total_bytes
    )


def test_kubernetes_scrape_config_matches_what_the_runtime_renders() -> None:
    """The model-server job keeps pods by the labels, annotations and port name that the
    Kubernetes runtime puts on them, and turns the deployment label into `deployment`."""
    config = yaml.safe_load(PROMETHEUS_CONFIGS[1].read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    def keeps(job: dict[str, Any]) -> dict[str, str]:
        return {
            r["source_labels"][0]: r["regex"]
            for r in job["relabel_configs"]
            if r.get("action") == "keep"
        }

    def meta_label(name: str) -> str:
        return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)

    (deployment,) = [
        m
        for m in render(make_desired("churn-live"), image="i", namespace="konan")
        if m["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    server = keeps(jobs["konan-model-servers"])
    component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
    assert server[meta_label("app.kubernetes.io/component")] == component
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ADMIN_PORT)
    admin = [p for p in container["ports"] if p["containerPort"] == ADMIN_PORT]
    assert [p["name"] for p in admin] == [server["__meta_kubernetes_pod_container_port_name"]]
    assert {
        "source_labels": [meta_label(DEPLOYMENT_LABEL)],
        "target_label": "deployment",
    } in jobs["konan-model-servers"]["relabel_configs"]

    (api_deployment,) = [
        m for m in yaml.safe_load_all(API_MANIFEST.read_text()) if m["kind"] == "Deployment"
    ]
    api_pod = api_deployment["spec"]["template"]
    api = keeps(jobs["konan-api"])
    assert (
        api[meta_label("app.kubernetes.io/component")]
        == (api_pod["metadata"]["labels"]["app.kubernetes.io/component"])
    )
    ports = {p["name"]: p["containerPort"] for p in api_pod["spec"]["containers"][0]["ports"]}
    port_name = api["__meta_kubernetes_pod_container_port_name"]
    assert str(ports[port_name]) == api_pod["metadata"]["annotations"]["prometheus.io/port"]
    assert "authorization" in jobs["konan-api"]  # the API's /metrics wants the token


# The background processes' endpoints: each scrape job points where the process listens.
BACKGROUND = {
    # job: (compose service, k8s component labels, port setting, host setting)
    "konan-monitor": (
        "monitor",
        ["monitor"],
        "KONAN_MONITORING__METRICS_PORT",
        "KONAN_MONITORING__METRICS_HOST",
    ),
    "konan-worker": (
        "worker",
        ["worker", "scheduler"],
        "KONAN_QUEUE__WORKER_METRICS_PORT",
        "KONAN_QUEUE__WORKER_METRICS_HOST",
    ),
}


def test_compose_scrapes_the_monitor_and_the_worker_where_they_listen() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIGS[0].read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job_name, (service, _, port_setting, host_setting) in BACKGROUND.items():
        env = services[service]["environment"]
        assert env[host_setting] == ALL_INTERFACES, service  # the prometheus container is elsewhere
        assert env["KONAN_MODE"] == "scale-out", service  # the shared settings are still there
        (static,) = jobs[job_name]["static_configs"]
        assert static["targets"] == [f"{service}:{env[port_setting]}"], job_name
        assert str(env[port_setting]) in [str(p) for p in services[service]["expose"]]
        assert "authorization" not in jobs[job_name]  # prometheus_client's server has none
        # Not published on the host: only the compose network reaches it.
        assert "ports" not in services[service], service


def test_kubernetes_scrapes_the_monitor_and_the_worker_pods_on_their_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIGS[1].read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    deployments = {
        m["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: m
        for path in (MONITOR_MANIFEST, WORKER_MANIFEST)
        for m in yaml.safe_load_all(path.read_text())
        if m["kind"] == "Deployment"
    }
    for job_name, (_, components, port_setting, host_setting) in BACKGROUND.items():
        keeps = {
            r["source_labels"][0]: r["regex"]
            for r in jobs[job_name]["relabel_configs"]
            if r.get("action") == "keep"
        }
        component_regex = keeps["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
        port_name = keeps["__meta_kubernetes_pod_container_port_name"]
        kept = {c for c in deployments if re.fullmatch(component_regex, c)}
        assert kept == set(components), job_name
        for component in components:
            pod = deployments[component]["spec"]["template"]
            (container,) = pod["spec"]["containers"]
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert env[host_setting] == ALL_INTERFACES, component
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports[port_name] == int(env[port_setting]), component
            annotations = pod["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true", component
            assert annotations["prometheus.io/port"] == env[port_setting], component
            assert annotations["prometheus.io/path"] == "/metrics", component


_LIST_LABELS = """
import importlib, json, sys
from prometheus_client import REGISTRY
for module in sys.argv[1:]:
    importlib.import_module(module)
names = set()
for collector in set(REGISTRY._names_to_collectors.values()):
    names.update(getattr(collector, "_labelnames", ()))
print(json.dumps(sorted(names)))
"""


def declared_label_names(*modules: str) -> set[str]:
    """Label names of every metric on the default registry of a fresh interpreter that imported
    `modules`, set or not yet (a labelled metric without a child shows no sample)."""
    done = subprocess.run(
        [sys.executable, "-c", _LIST_LABELS, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    names: list[str] = json.loads(done.stdout)
    return set(names)


def sample_label_names(text: str) -> set[str]:
    return {
        label
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for label in sample.labels
    }


def target_labels(job: dict[str, Any]) -> set[str]:
    """Labels Prometheus puts on every series of a job: `job`, `instance`, static labels and
    relabelling targets (internal `__*` ones aside)."""
    labels = {"job", "instance"}
    for static in job.get("static_configs", []):
        labels.update(static.get("labels", {}))
    for rule in job.get("relabel_configs", []):
        target = rule.get("target_label")
        if target and not target.startswith("__"):
            labels.add(target)
    return labels


def test_no_exported_label_is_renamed_by_the_scrape_configs_target_labels(
    api_text: str, monitor_text: str, worker_text: str, tmp_path: Path
) -> None:
    """A sample label that a scrape job also sets as a target label arrives as
    `exported_<name>` (honor_labels is off), and every query on it comes back wrong."""
    spec = make_spec(1, deployment="churn-live")
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    replica = Replica(
        spec_path, spec, Settings(data_dir=tmp_path / "data"), Options(spec=spec_path)
    )
    try:
        replica_names: set[str] = set()
        for collector in set(replica.metrics.registry._names_to_collectors.values()):
            replica_names.update(getattr(collector, "_labelnames", ()))
        replica_text = generate_latest(replica.metrics.registry).decode()
    finally:
        replica.close()
    exported = {
        "konan-api": sample_label_names(api_text) | declared_label_names("konan.server.app"),
        "konan-monitor": sample_label_names(monitor_text)
        | declared_label_names("konan.cli.services", "konan.monitoring.consumer"),
        "konan-worker": sample_label_names(worker_text)
        | declared_label_names("konan.worker.app", *TASK_MODULES),
        "konan-model-servers": replica_names
        | sample_label_names(replica_text)
        | declared_label_names("konan.serving.__main__", "konan.serving.server"),
    }
    assert "process" in exported["konan-api"]  # the heartbeat gauges were read
    assert "kind" in exported["konan-worker"]  # konan_alerts_firing, not set yet
    clashes = []
    for path in PROMETHEUS_CONFIGS:
        for job in yaml.safe_load(path.read_text())["scrape_configs"]:
            name = job["job_name"]
            if name not in exported:
                continue
            both = exported[name] & target_labels(job)
            if both:
                clashes.append(f"{path.name} {name}: {sorted(both)}")
    assert clashes == []
