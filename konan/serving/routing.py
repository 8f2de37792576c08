"""Which loaded version answers a request: the champion, or the canary for its share.

A `RoutingTable` is built once per revision from loaded, warmed-up versions and never changes;
the server swaps the whole table in one assignment, and a request keeps the table it started
with, so it finishes on the version it was routed to.

With the sticky header present, the split is a pure function of the header's value (CRC-32
scaled to [0, 1)), so one caller always lands on the same version, on every replica, and
raising the canary weight only moves callers from champion to canary, never back.
"""

from __future__ import annotations

import random
import zlib
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from konan.serving.spec import ServingSpec
    from konan.serving.versions import LoadedVersion

Role = Literal["champion", "canary"]
_SCALE = 1.0 / 2**32


def sticky_fraction(value: bytes) -> float:
    return zlib.crc32(value) * _SCALE


class RoutingTable:
    __slots__ = (
        "canary",
        "canary_weight",
        "champion",
        "deployment",
        "deployment_id",
        "max_batch_rows",
        "revision",
        "shadow",
        "spec",
        "sticky_header",
        "versions",
    )

    def __init__(self, spec: ServingSpec, versions: dict[int, LoadedVersion]) -> None:
        traffic = spec.traffic
        self.spec = spec
        self.revision = spec.revision
        self.deployment = spec.deployment
        self.deployment_id = spec.deployment_id
        self.max_batch_rows = spec.max_batch_rows
        self.versions = versions
        self.champion = versions[traffic.champion]
        self.canary = versions[traffic.canary] if traffic.canary is not None else None
        self.canary_weight = traffic.canary_weight if self.canary is not None else 0.0
        self.shadow = versions[traffic.shadow] if traffic.shadow is not None else None
        header = traffic.sticky_header
        self.sticky_header: bytes | None = header.lower().encode("latin-1") if header else None

    def choose(self, sticky: bytes | None) -> tuple[LoadedVersion, Role]:
        canary = self.canary
        if canary is None or self.canary_weight <= 0.0:
            return self.champion, "champion"
        share = sticky_fraction(sticky) if sticky is not None else random.random()
        if share < self.canary_weight:
            return canary, "canary"
        return self.champion, "champion"

    def roles(self) -> dict[int, str]:
        out = {self.champion.version: "champion"}
        if self.canary is not None:
            out[self.canary.version] = "canary"
        if self.shadow is not None:
            out.setdefault(self.shadow.version, "shadow")
        return out
