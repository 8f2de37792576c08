"""`konan deploy | predict | traffic | promote | rollback`, `konan deployments …`,
`konan keys …`: thin over the SDK."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from konan.cli.client import TokenOption, UrlOption, api, client_from
from konan.cli.common import console, fail
from konan.core.errors import KonanError

deployments_app = typer.Typer(help="Inspect deployments.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for applications.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="deployment name")]
Reason = Annotated[str, typer.Option(help="why (kept in the revision history)")]


def _show(d: dict[str, Any]) -> None:
    t = d["traffic"]
    route = f"champion v{t['champion']}"
    if t["canary"]:
        route += f", canary v{t['canary']} at {t['canary_weight']:.0%}"
    if t["shadow"]:
        route += f", shadow v{t['shadow']}"
    reason = f" ({d['status_reason']}: {d['status_message']})" if d["status_reason"] else ""
    console.print(
        f"[bold]{d['name']}[/] revision {d['revision']}: {d['status']}{reason}\n"
        f"  {route}\n  predict: POST {d['predict_url']}"
        + (f"\n  direct:  POST {d['endpoint_url']}/predict" if d["endpoint_url"] else "")
    )


def _outcome(result: dict[str, Any]) -> None:
    if "approval_id" in result:
        console.print(f"[yellow]approval request {result['approval_id']}[/]: {result['detail']}")
    else:
        _show(result)


def deploy(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Option("--version", "-v", help="model version to serve")],
    name: Annotated[str | None, typer.Option(help="deployment name (default: the model's)")] = None,
    project: Annotated[str, typer.Option("--project", "-p")] = "default",
    min_replicas: Annotated[int, typer.Option(help="replicas at least")] = 1,
    max_replicas: Annotated[int, typer.Option(help="replicas at most (autoscaling)")] = 1,
    gated: Annotated[bool, typer.Option(help="changes need an approver")] = False,
    wait: Annotated[float, typer.Option(help="seconds to wait for ready (0: don't)")] = 120,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Deploy a model version as a prediction API in one step."""
    try:
        with client_from(url, token) as client, console.status("deploying…"):
            result = client.deploy(
                name or model,
                model=model,
                version=version,
                project=project,
                replicas=(min_replicas, max(min_replicas, max_replicas)),
                production_gated=gated,
                wait=wait or None,
            )
    except (KonanError, TimeoutError) as exc:
        fail(getattr(exc, "detail", str(exc)), code=1)
    _show(result)


def predict(
    name: Name,
    key: Annotated[str, typer.Option(envvar="KONAN_API_KEY", help="API key (kn_…)")],
    inputs: Annotated[
        str | None, typer.Option("--inputs", help="JSON rows, e.g. '[{\"tenure\": 3}]'")
    ] = None,
    file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="JSON file of rows")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Send rows (JSON) to a deployment and print its answer."""
    raw = inputs if inputs is not None else (file.read_text() if file else sys.stdin.read())
    try:
        rows = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"the inputs are not valid JSON: {exc.msg}")
    if isinstance(rows, dict):
        rows = rows.get("inputs", [rows])
    with api(url, None) as client:
        answer = client.predict(name, rows, api_key=key)
    console.print_json(data=answer)


def traffic(
    name: Name,
    canary: Annotated[int | None, typer.Option(help="canary version")] = None,
    weight: Annotated[float, typer.Option(help="share of requests for the canary, 0 to 1")] = 0.0,
    shadow: Annotated[int | None, typer.Option(help="shadow version")] = None,
    champion: Annotated[int | None, typer.Option(help="champion version")] = None,
    reason: Reason = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Set the champion, a canary with a weight, and a shadow."""
    with api(url, token) as client:
        result = client.set_traffic(
            name,
            champion=champion,
            canary=canary,
            canary_weight=weight,
            shadow=shadow,
            reason=reason,
        )
    _outcome(result)


def promote(
    name: Name,
    version: Annotated[int | None, typer.Option(help="default: the canary")] = None,
    reason: Reason = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Make the canary (or --version) the champion."""
    with api(url, token) as client:
        result = client.promote(name, version=version, reason=reason)
    _outcome(result)


def rollback(
    name: Name,
    revision: Annotated[int | None, typer.Option(help="default: the previous revision")] = None,
    reason: Reason = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Return to the previous revision (or --revision)."""
    with api(url, token) as client:
        result = client.rollback(name, revision=revision, reason=reason)
    _outcome(result)


@deployments_app.command("list")
def deployments_list(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the deployments you can see."""
    with api(url, token) as client:
        rows = client.list_deployments(project=project)
    table = Table("name", "model", "status", "revision", "champion", "canary", "shadow")
    for d in rows:
        t = d["traffic"]
        canary = f"v{t['canary']} ({t['canary_weight']:.0%})" if t["canary"] else ""
        table.add_row(
            d["name"],
            d["model"],
            d["status"],
            str(d["revision"]),
            f"v{t['champion']}",
            canary,
            f"v{t['shadow']}" if t["shadow"] else "",
        )
    console.print(table)


@deployments_app.command("show")
def deployments_show(name: Name, url: UrlOption = None, token: TokenOption = None) -> None:
    """Status, traffic and revision history of a deployment."""
    with api(url, token) as client:
        current = client.get_deployment(name)
        history = client.revisions(name)
    _show(current)
    table = Table("revision", "champion", "canary", "shadow", "by", "when", "why")
    for r in history:
        t = r["traffic"]
        table.add_row(
            str(r["revision"]),
            f"v{t['champion']}",
            f"v{t['canary']} ({t['canary_weight']:.0%})" if t["canary"] else "",
            f"v{t['shadow']}" if t["shadow"] else "",
            r["created_by"] or "",
            r["created_at"][:19],
            r["reason"],
        )
    console.print(table)


@deployments_app.command("logs")
def deployments_logs(
    name: Name,
    tail: Annotated[int, typer.Option(help="lines")] = 200,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The last lines its model servers wrote."""
    with api(url, token) as client:
        lines = client.deployment_logs(name, tail=tail)
    for line in lines:
        console.print(line, markup=False, highlight=False)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="what the key is for, e.g. checkout-svc")],
    deployment: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
    project: Annotated[str | None, typer.Option(help="every deployment of a project")] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 date-time")] = None,
    rate_limit: Annotated[
        str | None, typer.Option(help="e.g. 100/second; enforced by each model server process")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a predict key; the secret is printed once."""
    with api(url, token) as client:
        key = client.create_api_key(
            name,
            deployments=deployment,
            project=project,
            expires_at=expires_at,
            rate_limit=rate_limit,
        )
    console.print(f"key {key['id']} ({key['prefix']}), shown only now:")
    console.print(key["key"], markup=False, highlight=False)


@keys_app.command("list")
def keys_list(url: UrlOption = None, token: TokenOption = None) -> None:
    """Your keys (never their secrets)."""
    with api(url, token) as client:
        keys = client.list_api_keys()
    table = Table(
        "id", "name", "prefix", "deployments", "expires", "rate limit", "revoked", "last used"
    )
    for k in keys:
        table.add_row(
            str(k["id"]),
            k["name"],
            k["prefix"],
            ", ".join(k["deployments"]) or (f"project {k['project']}" if k["project"] else ""),
            (k["expires_at"] or "")[:19],
            k.get("rate_limit") or "",
            "yes" if k["revoked_at"] else "",
            (k["last_used_at"] or "")[:19],
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="key id")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a key: model servers refuse it within seconds."""
    with api(url, token) as client:
        client.revoke_api_key(key_id)
    console.print(f"key {key_id} revoked")
