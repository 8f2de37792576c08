"""Konan: a self-hosted MLOps platform — registry, one-step deployment, monitoring, governance.

import konan
client = konan.Client("http://127.0.0.1:8000", token)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from konan.sdk.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import konan.server…` in a server process doesn't pull the HTTP client in.
    if name == "Client":
        from konan.sdk.client import Client

        return Client
    raise AttributeError(name)
