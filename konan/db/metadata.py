"""Every domain's tables on one MetaData: what Alembic and the tests read."""

from __future__ import annotations

from konan.db import heartbeats as _heartbeats  # noqa: F401
from konan.db.base import Base
from konan.deployments import orm as _deployments  # noqa: F401
from konan.governance import orm as _governance  # noqa: F401
from konan.jobs import orm as _jobs  # noqa: F401
from konan.monitoring import orm as _monitoring  # noqa: F401
from konan.registry import orm as _registry  # noqa: F401

metadata = Base.metadata
