"""Annotated dependencies shared by every router. Tests override these, never patch globals."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, NoReturn

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from konan.backends.artifacts.base import ArtifactStore
from konan.core.errors import PermissionDenied, Unauthenticated
from konan.core.settings import Settings
from konan.db.engine import begin_write
from konan.governance import repository as governance_repo
from konan.governance.orm import User
from konan.governance.security import decode_token
from konan.server.state import AppState

SESSION_COOKIE = "konan_session"
CSRF_COOKIE = "konan_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.konan
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_artifacts(state: StateDep) -> ArtifactStore:
    return state.artifacts


ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]


def get_session(request: Request, state: StateDep) -> Iterator[Session]:
    """The request's unit of work: commits when the route returns, rolls back when it raises.

    scope="function" (below) makes FastAPI finish this before the response is sent, so a failed
    commit is the client's error response, not a silent loss after a 200.
    """
    session = state.session_factory()
    if request.method not in SAFE_METHODS:
        begin_write(session)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@dataclass(frozen=True)
class Principal:
    user: User
    via: str  # "token" | "cookie"

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return value.strip()


def _check_csrf(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie, header):
        raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header for a cookie session")
    origin = request.headers.get("origin")
    if origin is not None:
        expected = f"{request.url.scheme}://{request.url.netloc}"
        if origin != expected:
            raise PermissionDenied(f"requests from origin {origin!r} are not allowed")


def _refuse_api_key(session: Session, token: str) -> NoReturn:
    """An API key is for the data plane. A live one is a valid credential used in the wrong
    place (403); anything else is no credential at all (401)."""
    from konan.governance.api_keys import hash_key
    from konan.governance.orm import ApiKey

    row = session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
    if row is not None and row.revoked_at is None:
        raise PermissionDenied("API keys may only call prediction routes; log in as a user")
    raise Unauthenticated("the API key is invalid or revoked")


def get_principal(request: Request, state: StateDep, session: SessionDep) -> Principal:
    """The signed-in user, loaded fresh on every request so a role change applies at once."""
    token = _bearer(request)
    via = "token"
    if token is None:
        token = request.cookies.get(SESSION_COOKIE)
        via = "cookie"
    if not token:
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>'")
    if token.startswith("kn_"):
        _refuse_api_key(session, token)
    claims = decode_token(token, secret=state.jwt_secret, kind="access")
    user = governance_repo.user_by_id(session, claims.user_id)
    if user is None or not user.is_active or user.token_version != claims.token_version:
        raise Unauthenticated("the token is no longer valid; log in again")
    if via == "cookie":
        _check_csrf(request)
    state.rate_limiter.check(state.rate_limiter.user, "user", str(user.id), what="requests")
    return Principal(user=user, via=via)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
