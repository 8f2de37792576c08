"""`konan login`, `konan models …`, `konan datasets …`: thin over the SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from konan.cli.client import TokenOption, UrlOption, api, client_from, save_credentials
from konan.cli.common import console, fail
from konan.core.errors import KonanError

models_app = typer.Typer(help="Register and inspect models.", no_args_is_help=True)
datasets_app = typer.Typer(help="Upload and inspect datasets.", no_args_is_help=True)

ProjectOption = Annotated[str, typer.Option("--project", "-p", help="project name")]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _json_option(raw: str | None, name: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"--{name} is not valid JSON: {exc.msg}")
    if not isinstance(value, dict):
        fail(f"--{name} must be a JSON object")
    return value


def _tags(items: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--tag takes key=value, got {item!r}")
        tags[key] = value
    return tags


def login(
    username: Annotated[str, typer.Option(prompt=True, help="user name")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, help="password")],
    url: UrlOption = None,
) -> None:
    """Log in and keep the token for the next commands (in ~/.config/konan, owner-only)."""
    with client_from(url, None) as client:
        try:
            tokens = client.login(username, password)
        except KonanError as exc:
            fail(exc.detail, code=1)
    path = save_credentials(client.url, tokens["access_token"])
    console.print(f"logged in to {client.url} as {username} (token saved in {path})")


@models_app.command("push")
def models_push(
    artifact: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="model file")],
    name: Annotated[str, typer.Option("--name", "-n", help="model name")],
    project: ProjectOption = "default",
    task: Annotated[
        str | None, typer.Option(help="classification or regression (new models)")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="reference CSV/Parquet")
    ] = None,
    target: Annotated[str | None, typer.Option(help="label column in the reference")] = None,
    flavor: Annotated[str | None, typer.Option(help="sklearn, onnx, python, …")] = None,
    metrics: Annotated[str | None, typer.Option(help="JSON, e.g. '{\"auc\": 0.91}'")] = None,
    params: Annotated[str | None, typer.Option(help="JSON object of parameters")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
    source_commit: Annotated[str | None, typer.Option(help="git commit of the code")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Register a new version of a model from a file."""
    total = artifact.stat().st_size + (reference.stat().st_size if reference else 0)
    with client_from(url, token) as client, _progress() as progress:
        task_id = progress.add_task(f"uploading {artifact.name}", total=total)
        try:
            version = client.register_model(
                artifact,
                name=name,
                project=project,
                task=task,
                reference_data=reference,
                target=target,
                flavor=flavor,
                metrics=_json_option(metrics, "metrics"),
                params=_json_option(params, "params"),
                tags=_tags(tag),
                source_commit=source_commit,
                progress=lambda n: progress.advance(task_id, n),
            )
        except KonanError as exc:
            fail(exc.detail, code=1)
    console.print(
        f"[green]registered[/] {name} version {version['version']} "
        f"({version['flavor']}, sha256 {version['sha256'][:12]}…)"
    )


@models_app.command("list")
def models_list(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the models you can see."""
    with api(url, token) as client:
        models = client.list_models(project=project)
    table = Table("project", "name", "task", "latest", "aliases")
    for m in models:
        aliases = ", ".join(f"{k}→{v}" for k, v in m["aliases"].items())
        table.add_row(m["project"], m["name"], m["task"], str(m["latest_version"] or "-"), aliases)
    console.print(table)


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int | None, typer.Option("--version", "-v")] = None,
    project: ProjectOption = "default",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a model's versions, or one version in full (--version)."""
    with api(url, token) as client:
        if version is not None:
            console.print_json(data=client.get_version(name, version, project=project))
            return
        versions = client.list_versions(name, project=project)
    table = Table("version", "flavor", "sha256", "metrics", "created by", "created at")
    for v in versions:
        metrics = ", ".join(f"{k}={val:g}" for k, val in v["metrics"].items())
        table.add_row(
            str(v["version"]),
            v["flavor"],
            v["sha256"][:12],
            metrics,
            v["created_by"] or "",
            v["created_at"][:19],
        )
    console.print(table)


@datasets_app.command("push")
def datasets_push(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or Parquet")],
    name: Annotated[str, typer.Option("--name", "-n", help="dataset name")],
    project: ProjectOption = "default",
    description: Annotated[str, typer.Option(help="what the data is")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Upload a new version of a dataset."""
    with client_from(url, token) as client, _progress() as progress:
        task_id = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        try:
            row = client.push_dataset(
                path,
                name=name,
                project=project,
                description=description,
                progress=lambda n: progress.advance(task_id, n),
            )
        except KonanError as exc:
            fail(exc.detail, code=1)
    console.print(
        f"[green]stored[/] {name} version {row['version']}: {row['row_count']} rows, "
        f"{len(row['schema']['columns'])} columns ({row['format']})"
    )


@datasets_app.command("list")
def datasets_list(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the datasets you can see."""
    with api(url, token) as client:
        datasets = client.list_datasets(project=project)
    table = Table("project", "name", "latest", "description")
    for d in datasets:
        table.add_row(d["project"], d["name"], str(d["latest_version"] or "-"), d["description"])
    console.print(table)
