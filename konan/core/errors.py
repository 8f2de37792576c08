"""The error tree. Services raise these; one handler in konan.server maps them to HTTP.

Every error has a stable ``code`` (machine readable, part of the API contract) and an HTTP
``status``. The SDK turns ``{"detail", "code"}`` payloads back into the same classes via
``error_for_code``, so a caller catches ``NotFound`` whether it talks HTTP or calls a service.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KonanError(Exception):
    code: ClassVar[str] = "konan_error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}

    def to_payload(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}


class ConfigError(KonanError):
    """Settings are invalid or incomplete; raised at start, never per request."""

    code = "config_error"
    status = 500


class InvalidInput(KonanError):
    code = "invalid_input"
    status = 422


class BadRequest(KonanError):
    code = "bad_request"
    status = 400


class Unauthenticated(KonanError):
    code = "unauthenticated"
    status = 401


class PermissionDenied(KonanError):
    code = "permission_denied"
    status = 403


class NotFound(KonanError):
    code = "not_found"
    status = 404


class Conflict(KonanError):
    code = "conflict"
    status = 409


class PayloadTooLarge(KonanError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(KonanError):
    code = "unsupported_media_type"
    status = 415


class RateLimited(KonanError):
    code = "rate_limited"
    status = 429


class DependencyUnavailable(KonanError):
    """A database, broker or store is down; the client should retry later (503 + Retry-After)."""

    code = "dependency_unavailable"
    status = 503


class ArtifactIntegrityError(KonanError):
    """Stored bytes no longer hash to their digest: the artifact must not be served."""

    code = "artifact_integrity_error"
    status = 500


class SchemaOutOfDate(ConfigError):
    code = "schema_out_of_date"


def _all_subclasses(cls: type[KonanError]) -> list[type[KonanError]]:
    out: list[type[KonanError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_for_code(code: str | None, status: int) -> type[KonanError]:
    """The error class for a payload code, else the closest class by HTTP status."""
    classes = _all_subclasses(KonanError)
    for cls in classes:
        if cls.code == code:
            return cls
    for cls in classes:
        if cls.status == status and cls.__base__ is KonanError:
            return cls
    return KonanError
