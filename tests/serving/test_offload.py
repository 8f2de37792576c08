"""Which versions run on a worker thread: decided on the model's own call time, with hysteresis."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from konan.serving.spec import ServedVersion
from konan.serving.validation import Checked, Checker
from konan.serving.versions import OFFLOAD_AFTER_SECONDS, LoadedVersion


class Sleepy:
    """Predicts after sleeping `delay` seconds."""

    def __init__(self) -> None:
        self.delay = 0.0

    def predict(self, columns: Any) -> Any:
        time.sleep(self.delay)
        return np.zeros(1, dtype=np.int64)

    def predict_with_proba(self, columns: Any) -> tuple[Any, Any]:
        return self.predict(columns), None


def _version(model: Sleepy) -> LoadedVersion:
    served = ServedVersion(
        version=1, model_version_id=1, sha256="0" * 64, flavor="python", signature={}
    )
    histogram = Histogram("t", "t", registry=CollectorRegistry())
    checker = Checker.__new__(Checker)
    return LoadedVersion(served, model, checker, histogram, with_proba=False)  # type: ignore[arg-type]


def test_a_slow_model_is_offloaded_and_a_fast_one_returns_inline_after_a_spike() -> None:
    model = Sleepy()
    version = _version(model)
    checked = Checked(columns={}, rows=1)
    version.predict(checked)
    assert not version.offload
    model.delay = OFFLOAD_AFTER_SECONDS * 10  # one preempted or slow call
    version.predict(checked)
    assert version.offload
    model.delay = 0.0
    for _ in range(30):
        version.predict(checked)
    assert not version.offload
    assert version.ewma < OFFLOAD_AFTER_SECONDS / 2


def test_hysteresis_keeps_a_borderline_model_from_flapping() -> None:
    version = _version(Sleepy())
    version.ewma, version.offload = OFFLOAD_AFTER_SECONDS * 0.8, True
    version.observe(OFFLOAD_AFTER_SECONDS * 0.8)
    assert version.offload  # still above half the threshold: stays offloaded
    version.ewma, version.offload = OFFLOAD_AFTER_SECONDS * 0.8, False
    version.observe(OFFLOAD_AFTER_SECONDS * 0.8)
    assert not version.offload  # below the threshold: stays inline
