"""`konan monitoring drift | settings | health | performance | alerts | export`: thin over the
SDK.

(`konan monitor` is the log consumer; these commands read what it stored.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from konan.cli.client import TokenOption, UrlOption, client_from
from konan.cli.common import console, fail
from konan.core.errors import KonanError

monitoring_app = typer.Typer(
    help="Drift, health, performance, alerts and raw exports of a deployment.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="deployment name")]
Start = Annotated[str | None, typer.Option(help="ISO time (default: depends on the view)")]
End = Annotated[str | None, typer.Option(help="ISO time (default: now)")]


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


@monitoring_app.command("drift")
def drift(
    name: Name,
    start: Start = None,
    end: End = None,
    version: Annotated[int | None, typer.Option(help="model version (default: champion)")] = None,
    method: Annotated[
        str | None, typer.Option(help="auto | reference_chunks | fixed (default: stored)")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="every feature's threshold (default: stored)")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Drift per feature against the version's reference data."""
    try:
        with client_from(url, token) as client:
            report = client.drift(
                name, start=start, end=end, version=version, method=method, threshold=threshold
            )
    except KonanError as exc:
        fail(exc.detail, code=1)
    table = Table("feature", "test", "statistic", "threshold", "source", "drifted", title=None)
    rows = list(report["features"])
    if report.get("prediction"):
        rows.append(report["prediction"])
    for f in rows:
        statistic = f["statistic"] if f["statistic"] is not None else f["distance"]
        table.add_row(
            escape(f["name"]),  # feature names are user data: '[x]' must not read as markup
            f["test"] or "(no data)",
            _num(statistic),
            _num(f["threshold"]) + (" (p)" if f.get("threshold_on") == "p_value" else ""),
            f.get("threshold_source", ""),
            "[bold red]yes[/]" if f["drifted"] else "no",
        )
    console.print(
        f"[bold]{report['deployment']}[/] v{report['model_version']} "
        f"{report['start'][:16]} → {report['end'][:16]}: "
        f"{report['features_drifted']} of {report['features_tested']} features drifted"
        + (" — [bold red]dataset drift[/]" if report["dataset_drift"] else ""),
        highlight=False,
    )
    console.print(table)
    console.print(f"method: {report.get('method', 'auto')}", highlight=False)
    for note in report.get("notes", []):
        console.print(f"[dim]note: {note}[/]", highlight=False)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key or not value:
            fail(f"{what} {item!r} must look like name=value", code=2)
        out[key] = value
    return out


@monitoring_app.command("settings")
def settings(
    name: Name,
    method: Annotated[str | None, typer.Option(help="auto | reference_chunks | fixed")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="every feature's threshold (p-value or distance)")
    ] = None,
    feature_threshold: Annotated[
        list[str] | None, typer.Option(help="name=value, repeatable")
    ] = None,
    drift_share: Annotated[float | None, typer.Option(help="share of drifted features")] = None,
    numeric_test: Annotated[
        str | None, typer.Option(help="ks | wasserstein | psi | jensenshannon")
    ] = None,
    categorical_test: Annotated[
        str | None, typer.Option(help="chisquare | z | psi | jensenshannon")
    ] = None,
    test: Annotated[list[str] | None, typer.Option(help="name=test, repeatable")] = None,
    reset: Annotated[bool, typer.Option(help="back to the defaults")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show the deployment's drift settings; with options, change them (the options given
    replace those stored, the rest stay)."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "method": method,
            "threshold": threshold,
            "drift_share": drift_share,
            "numeric_test": numeric_test,
            "categorical_test": categorical_test,
        }.items()
        if v is not None
    }
    if feature_threshold:
        thresholds = _pairs(feature_threshold, "--feature-threshold")
        try:
            changes["feature_thresholds"] = {k: float(v) for k, v in thresholds.items()}
        except ValueError:
            fail("--feature-threshold values must be numbers", code=2)
    if test:
        changes["tests"] = _pairs(test, "--test")
    try:
        with client_from(url, token) as client:
            if reset:
                current = client.set_monitoring_settings(name, changes)
            elif changes:
                stored = client.monitoring_settings(name)["drift"]
                current = client.set_monitoring_settings(name, {**stored, **changes})
            else:
                current = client.monitoring_settings(name)
    except KonanError as exc:
        fail(exc.detail, code=1)
    drift = current["drift"]
    table = Table("setting", "value", title=f"drift settings of {current['deployment']}")
    for key in ("method", "threshold", "drift_share", "numeric_test", "categorical_test"):
        table.add_row(key, "" if drift.get(key) is None else str(drift[key]))
    for feature, value in sorted(drift.get("feature_thresholds", {}).items()):
        table.add_row(escape(f"threshold[{feature}]"), _num(value))
    for feature, value in sorted(drift.get("tests", {}).items()):
        table.add_row(escape(f"test[{feature}]"), str(value))
    console.print(table)


@monitoring_app.command("health")
def health(
    name: Name,
    start: Start = None,
    end: End = None,
    bucket: Annotated[str, typer.Option(help="1m | 5m | 1h | 1d")] = "1h",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Requests, errors and latency percentiles per bucket."""
    try:
        with client_from(url, token) as client:
            report = client.monitoring_health(name, start=start, end=end, bucket=bucket)
    except KonanError as exc:
        fail(exc.detail, code=1)
    table = Table("start", "version", "requests", "4xx", "5xx", "error rate", "p50", "p95", "p99")
    for b in report["buckets"]:
        lat = b["latency_ms"]
        table.add_row(
            b["start"][:16],
            _num(b["model_version"]),
            str(b["requests"]),
            str(b["errors_by_class"]["4xx"]),
            str(b["errors_by_class"]["5xx"]),
            f"{b['error_rate']:.2%}",
            _num(lat["p50"]),
            _num(lat["p95"]),
            _num(lat["p99"]),
        )
    console.print(table)


@monitoring_app.command("performance")
def performance(
    name: Name,
    start: Start = None,
    end: End = None,
    bucket: Annotated[str | None, typer.Option(help="15m, 1h, 1d …")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Realised performance per version from ground truth over the window."""
    try:
        with client_from(url, token) as client:
            report = client.performance(name, start=start, end=end, bucket=bucket)
    except KonanError as exc:
        fail(exc.detail, code=1)
    keys = (
        ("accuracy", "precision", "recall", "f1", "roc_auc")
        if report["task"] != "regression"
        else ("mae", "rmse", "r2", "mape")
    )
    table = Table("version", "roles", "labelled", *keys)
    for o in report["overall"]:
        metrics = o["metrics"] or {}
        table.add_row(
            _num(o["version"]),
            ", ".join(o["roles"]),
            str(o["labelled_requests"]),
            *(_num(metrics.get(k)) for k in keys),
        )
    console.print(table)


@monitoring_app.command("alerts")
def alerts(
    name: Name,
    state: Annotated[str | None, typer.Option(help="firing | resolved")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Alerts of a deployment, newest first, and its alert rules."""
    try:
        with client_from(url, token) as client:
            rows = client.alerts(name, state=state)
            rules = client.list_alert_rules(name)
    except KonanError as exc:
        fail(exc.detail, code=1)
    table = Table("id", "rule", "kind", "state", "value", "started", "resolved", "message")
    for a in rows:
        table.add_row(
            str(a["id"]),
            _num(a["rule_id"]),
            a["kind"],
            "[bold red]firing[/]" if a["state"] == "firing" else a["state"],
            _num(a["value"]),
            a["started_at"][:19],
            (a["resolved_at"] or "")[:19],
            escape(a["message"]),
        )
    console.print(table)
    ruled = Table("rule", "kind", "threshold", "window (s)", "cooldown (s)", "webhook", "enabled")
    for r in rules:
        ruled.add_row(
            str(r["id"]),
            escape(
                r["kind"]
                + (f" {r['feature'] or r['metric']}" if r["feature"] or r["metric"] else "")
            ),
            _num(r["threshold"]),
            str(r["window_seconds"]),
            str(r["cooldown_seconds"]),
            r["webhook_url"] or "",
            "yes" if r["enabled"] else "no",
        )
    console.print(ruled)


@monitoring_app.command("export")
def export(
    name: Name,
    out: Annotated[Path, typer.Option("--out", "-o", help="file to write", dir_okay=False)],
    start: Start = None,
    end: End = None,
    format: Annotated[str, typer.Option("--format", help="csv | parquet")] = "csv",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Raw prediction logs, one row per input row, to a CSV or Parquet file."""
    try:
        with client_from(url, token) as client, console.status("exporting…"):
            path = client.export_predictions(name, out, start=start, end=end, format=format)
    except KonanError as exc:
        fail(exc.detail, code=1)
    console.print(f"wrote {path} ({path.stat().st_size} bytes)", highlight=False)
