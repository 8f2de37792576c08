"""Shadow predictions: a copy of each answered request, run later, logged, never returned.

The event loop only offers a job to a bounded queue (`put_nowait`); when the queue is full the
job is dropped and counted, so a slow or broken shadow can never slow down or fail the primary.
One worker thread validates the rows against the shadow's own signature, calls its model, and
logs the outcome with role "shadow" (status 200, 422 when the rows do not fit its signature,
500 when it fails).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from konan.monitoring.stream import LogProducer, PredictionRecord
from konan.serving.metrics import ServingMetrics
from konan.serving.outputs import jsonable
from konan.serving.validation import Rejected
from konan.serving.versions import LoadedVersion

log = logging.getLogger("konan.serving.shadow")


@dataclass(frozen=True, slots=True)
class ShadowJob:
    version: LoadedVersion
    rows: list[Any]
    request_id: str
    deployment_id: int
    at: float


_STOP = object()


class ShadowRunner:
    def __init__(
        self, producer: LogProducer, metrics: ServingMetrics, *, queue_size: int = 64
    ) -> None:
        self._producer = producer
        self._metrics = metrics
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self.done = 0
        self._thread = threading.Thread(target=self._run, name="konan-shadow", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, job: ShadowJob) -> None:
        """Called on the event loop: never blocks."""
        if self._closed:
            self._metrics.shadow_dropped += 1
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._metrics.shadow_dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        """Drop what is still queued (counted) and give the running job `timeout` to finish."""
        self._closed = True
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
                dropped += 1
            except queue.Empty:
                break
        self._metrics.shadow_dropped += dropped
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                self._run_one(job)
            except Exception:  # never let one bad job end the worker
                log.exception("shadow job failed unexpectedly")
            self.done += 1

    def _run_one(self, job: ShadowJob) -> None:
        version = job.version
        started = time.perf_counter()
        outputs: dict[str, Any] = {}
        error: str | None = None
        try:
            checked = version.checker.validate(job.rows)
            labels, proba = version.predict(checked)
        except Rejected as exc:
            status, error = 422, f"{exc.reason}: {exc.detail}"[:500]
        except Exception as exc:
            status, error = 500, f"model_error: {type(exc).__name__}: {exc}"[:500]
        else:
            status = 200
            outputs["predictions"] = jsonable(labels)
            if proba is not None:
                outputs["probabilities"] = jsonable(proba)
            if checked.unseen:
                outputs["flags"] = {"unseen_categories": checked.unseen}
        elapsed = time.perf_counter() - started
        key = (version.version, "shadow", status)
        self._metrics.shadow_requests[key] += 1
        record: PredictionRecord = {
            "request_id": job.request_id,
            "deployment_id": job.deployment_id,
            "model_version_id": version.model_version_id,
            "role": "shadow",
            "at": job.at,
            "inputs": job.rows,
            "outputs": outputs,
            "latency_ms": elapsed * 1000.0,
            "status_code": status,
            "error": error,
        }
        if not self._producer.submit(record):
            self._metrics.shadow_log_shed += 1
