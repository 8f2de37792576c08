"""scikit-learn models saved with skops: loaded with exactly the trust they need, never more.

skops refuses types outside its defaults unless the caller names them. We ask the file which
types it needs (``get_untrusted_types`` reads the schema, builds nothing), refuse when any is
missing from the caller's ``trusted_types``, and then load trusting only those the file uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from konan.core.errors import InvalidInput
from konan.serving.flavors.archive import ArchiveLimits, open_zip
from konan.serving.flavors.estimator import EstimatorModel


def untrusted_types(path: Path) -> list[str]:
    import skops.io

    return sorted(skops.io.get_untrusted_types(file=path))


def load_skops(
    path: Path, *, trusted_types: Sequence[str], limits: ArchiveLimits = ArchiveLimits()
) -> EstimatorModel:
    import skops.io

    with open_zip(path, limits):  # paths, sizes, bombs: checked before skops reads a member
        pass
    needed = untrusted_types(path)
    allowed = set(trusted_types)
    missing = [t for t in needed if t not in allowed]
    if missing:
        raise InvalidInput(
            "the skops file uses types that are not trusted: "
            + ", ".join(missing)
            + ". Check that they are what you expect; an admin can then trust them for this "
            "version (trusted_types) or for the whole server",
            extra={"reason": "untrusted_types", "untrusted_types": missing},
        )
    model = skops.io.load(path, trusted=needed)
    return EstimatorModel(model, flavor="sklearn", untrusted_types=tuple(needed))
