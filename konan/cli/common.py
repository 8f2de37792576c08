"""Shared CLI plumbing: settings from options + env, and errors printed for a person."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from konan.core.errors import ConfigError
from konan.core.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


def settings_from(data_dir: Path | None = None, **overrides: Any) -> Settings:
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(exc.detail)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
