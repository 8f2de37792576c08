"""Password hashing (argon2id via pwdlib) and JWT access/refresh tokens (PyJWT)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt
from pwdlib import PasswordHash

from konan.core.errors import Unauthenticated
from konan.core.types import utcnow

TokenKind = Literal["access", "refresh", "serving"]
AUDIENCE = "konan"
ALGORITHM = "HS256"

_hasher = PasswordHash.recommended()
# Verified against when the username is unknown, so both paths cost one argon2 verification
# and answer in similar time (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(valid, new_hash): new_hash is set when the stored hash should be upgraded."""
    if password_hash is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False, None
    return _hasher.verify_and_update(password, password_hash)


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    token_version: int
    kind: TokenKind
    jti: str


def issue_token(
    *,
    secret: str,
    user_id: int,
    token_version: int,
    kind: TokenKind,
    ttl_seconds: int,
    issued_at: datetime | None = None,
    token_id: str | None = None,
) -> str:
    """A signed token. With `issued_at` and `token_id` fixed the token is deterministic: the
    same inputs give the same string (serving tokens must not change between reconciles, or
    every runtime would see a new environment and replace its replicas)."""
    now = issued_at or utcnow()
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "ver": token_version,
        "typ": kind,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=ttl_seconds),
        "jti": token_id or uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(token: str, *, secret: str, kind: TokenKind) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "typ", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the token has expired; log in again") from None
    except jwt.PyJWTError:
        raise Unauthenticated("the token is invalid") from None
    if claims.get("typ") != kind:
        raise Unauthenticated(f"a {kind} token is required")
    try:
        return TokenClaims(
            user_id=int(claims["sub"]),
            token_version=int(claims.get("ver", 0)),
            kind=kind,
            jti=str(claims.get("jti", "")),
        )
    except (TypeError, ValueError):
        raise Unauthenticated("the token is invalid") from None
