"""ADVERSARIAL A01: every route answers 401 without credentials, except liveness and readiness."""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.testclient import TestClient

from konan.server.body_guard import is_upload

PUBLIC = {"/healthz", "/readyz"}
# How a credential is obtained in the first place: open by design (rate limited).
CREDENTIAL_EXCHANGE = {"/api/v1/auth/login", "/api/v1/auth/refresh"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document, plus the routes kept out of it on purpose."""
    found = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    hidden = [
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("POST", "/api/v1/internal/deployments/{name}/keys"),
    ]
    return found + hidden


def test_every_route_needs_credentials(app: FastAPI, client: TestClient) -> None:
    routes = [(m, p) for m, p in _routes(app) if p not in PUBLIC | CREDENTIAL_EXCHANGE]
    api_paths = {p for _, p in routes}
    assert "/metrics" in api_paths
    assert "/openapi.json" in api_paths
    assert "/api/v1/deployments/{name}/predict" in api_paths
    client.cookies.clear()
    for method, path in routes:
        concrete = _concrete(path)
        # A JSON body where one is taken; upload routes get none (a JSON body there is a 415).
        body = {} if method in ("POST", "PUT", "PATCH") and not is_upload(concrete) else None
        response = client.request(method, concrete, json=body)
        assert response.status_code == 401, (method, path, response.status_code, response.text)
        assert response.json()["code"] == "unauthenticated"


def test_liveness_and_readiness_are_public(client: TestClient) -> None:
    client.cookies.clear()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)


def test_a_key_in_the_query_string_is_not_a_credential(client: TestClient) -> None:
    response = client.get("/api/v1/auth/me?api_key=kn_00000000_x&token=abc")
    assert response.status_code == 401
