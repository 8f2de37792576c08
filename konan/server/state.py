"""What one server process holds: settings and the objects built from them, once, at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from konan.backends.artifacts.base import ArtifactStore
from konan.backends.runtimes.base import Runtime
from konan.core.settings import Settings
from konan.deployments.proxy import EndpointCache, PredictProxy
from konan.server.rate_limits import RateLimiter


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    jwt_secret: str
    artifacts: ArtifactStore
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.settings)

    @cached_property
    def runtime(self) -> Runtime:
        from konan.backends.runtimes.factory import runtime_from_settings

        return runtime_from_settings(self.settings)

    @cached_property
    def predict_proxy(self) -> PredictProxy:
        from konan.deployments import repository

        def endpoint(name: str) -> str | None:
            with self.session_factory() as session:
                deployment = repository.by_name(session, name)
                return deployment.endpoint_url if deployment else None

        return PredictProxy(EndpointCache(endpoint))

    @cached_property
    def celery(self) -> Any:
        """The Celery app used to send tasks (built on first use: the broker may start later)."""
        from konan.backends.queue.celery_app import make_celery

        return make_celery(self.settings)
