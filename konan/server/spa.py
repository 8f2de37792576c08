"""Serve the built dashboard (frontend/dist) from the control plane.

Two parts:

* ``/assets/*``: Vite's content-hashed bundles through Starlette's StaticFiles, cached for a year
  as immutable (a new build gives new file names).
* everything else that is a GET/HEAD and not the API: ``index.html`` (``no-cache``), so the
  client-side router can answer deep links like ``/models/churn`` after a reload. Files placed
  at the top of dist/ (favicon.ico, robots.txt, …) are served as themselves.

Reserved prefixes (``/api``, ``/healthz``, ``/readyz``, ``/metrics``, ``/docs``, ``/redoc``,
``/openapi.json``) are never answered with the page: an unknown API path keeps its JSON 404, and an
unknown method on it is not turned into a 405 by the fallback (the route does not match at all).

Call :func:`mount_spa` after every API router is included; the fallback must come last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Match, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

log = logging.getLogger("konan.server.spa")

#: First path segments that belong to the server, never to the dashboard.
RESERVED_SEGMENTS = frozenset(
    {"api", "healthz", "readyz", "metrics", "docs", "redoc", "openapi.json"}
)

ASSETS_CACHE_CONTROL = "public, max-age=31536000, immutable"
INDEX_CACHE_CONTROL = "no-cache"


def is_reserved_path(path: str) -> bool:
    """True for paths the API owns: ``/api``, ``/api/…``, ``/healthz``, ``/docs/…`` and so on."""
    first = path.lstrip("/").split("/", 1)[0]
    return first in RESERVED_SEGMENTS


class ImmutableStaticFiles(StaticFiles):
    """StaticFiles for content-hashed files: browsers may keep them forever."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = ASSETS_CACHE_CONTROL
        return response


class _SpaFallbackRoute(Route):
    """``GET /{path}`` → index.html, except for reserved paths, which it does not match at all."""

    def __init__(self, index: Path, root_files: dict[str, Path]) -> None:
        self._index = index
        self._root_files = root_files
        super().__init__(
            "/{path:path}",
            endpoint=self._serve,
            methods=["GET", "HEAD"],
            name="dashboard",
            include_in_schema=False,
        )

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Only GET/HEAD, so that e.g. POST /api/v1/nope stays a 404 instead of becoming a 405 here.
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return Match.NONE, {}
        if is_reserved_path(_route_path(scope)):
            return Match.NONE, {}
        return super().matches(scope)

    async def _serve(self, request: Request) -> Response:
        path: str = request.path_params.get("path", "")
        # Only names listed when the app started: a request path never reaches the filesystem.
        top_level = self._root_files.get(path)
        if top_level is not None:
            return FileResponse(top_level, headers={"Cache-Control": INDEX_CACHE_CONTROL})
        return FileResponse(
            self._index,
            media_type="text/html",
            headers={"Cache-Control": INDEX_CACHE_CONTROL},
        )


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def mount_spa(app: FastAPI, dist_dir: Path) -> None:
    """Serve the dashboard built into ``dist_dir``.

    Without a build there, log how to make one and mount nothing (the API works on its own).
    """
    dist_dir = Path(dist_dir)
    index = dist_dir / "index.html"
    if not index.is_file():
        log.warning(
            "dashboard not served: %s has no index.html; build it with "
            "`cd frontend && npm ci && npm run build`",
            dist_dir,
        )
        return

    assets = dist_dir / "assets"
    if assets.is_dir():
        app.mount("/assets", ImmutableStaticFiles(directory=assets), name="dashboard-assets")

    root_files = {
        p.name: p
        for p in dist_dir.iterdir()
        if p.is_file() and p.name != "index.html" and not is_reserved_path(p.name)
    }
    app.router.routes.append(_SpaFallbackRoute(index.resolve(), root_files))
    log.info("dashboard served from %s", dist_dir)
