"""Model outputs as JSON: numeric numpy arrays go to orjson as they are (it writes them
natively, which is much faster than `tolist()`); anything else becomes plain Python values."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

_NATIVE_KINDS = frozenset("biuf")
OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in _NATIVE_KINDS and value.dtype != np.float16:
            return np.ascontiguousarray(value)
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=OPTIONS)
