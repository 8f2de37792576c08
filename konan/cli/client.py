"""How CLI commands reach a Konan server: URL and token from options, env or `konan login`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from konan.cli.common import fail
from konan.core.errors import KonanError
from konan.sdk.client import Client

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="KONAN_URL", help="Konan server URL")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="KONAN_TOKEN", help="access token (default: konan login)"),
]
DEFAULT_URL = "http://127.0.0.1:8000"


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "konan" / "credentials.json"


def save_credentials(url: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token}, fh)
    return path


def load_credentials() -> dict[str, str]:
    path = credentials_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items() if k in ("url", "token")}


def client_from(url: str | None, token: str | None) -> Client:
    saved = load_credentials()
    return Client(url or saved.get("url") or DEFAULT_URL, token or saved.get("token"))


@contextmanager
def api(url: str | None, token: str | None) -> Iterator[Client]:
    """A client for one command; a server error becomes a one-line message and exit code 1."""
    try:
        with client_from(url, token) as client:
            yield client
    except KonanError as exc:
        fail(exc.detail, code=1)
