"""Prometheus metrics of the prediction-log pipeline.

Producer-side metrics (spooled, shed, spool bytes, replayed) move in model-server processes;
consumer-side metrics (ingested, duplicates, dead-lettered, lag, backlog) in the monitor. Both
live on the default registry, so each process's `/metrics` shows its own half.

`serve_metrics` is how the background processes (`konan monitor`, `konan worker`) expose the
default registry: prometheus_client's own HTTP server in a daemon thread, on the port their
settings name. The worker runs tasks in threads of its own process, so what a task sets is on
the registry this server reads (a prefork pool would need prometheus_client's multiprocess mode).

Collectors are module-level singletons. `_get_or_create` returns the collector already on the
registry when this module is loaded a second time in one process (``importlib.reload``, a test
harness importing by path), instead of failing with "Duplicated timeseries".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from konan.core.errors import ConfigError

_M = TypeVar("_M", bound=MetricWrapperBase)


def _get_or_create(kind: type[_M], name: str, documentation: str, **kwargs: Any) -> _M:
    try:
        return kind(name, documentation, **kwargs)
    except ValueError:
        # Already registered by an earlier load of this module: reuse it.
        existing = REGISTRY._names_to_collectors.get(name)
        if isinstance(existing, kind):
            return existing
        raise


INGESTED = _get_or_create(
    Counter, "konan_monitor_ingested", "Prediction records inserted into prediction_logs."
)
DUPLICATES = _get_or_create(
    Counter,
    "konan_monitor_duplicates",
    "Prediction records skipped because (request_id, role) was already stored (a replay).",
)
DEAD_LETTERED = _get_or_create(
    Counter,
    "konan_monitor_dead_lettered",
    "Prediction records moved to the dead-letter store instead of prediction_logs.",
    labelnames=("reason",),
)
LAG_SECONDS = _get_or_create(
    Gauge,
    "konan_monitor_lag_seconds",
    "Age of the oldest record in the last batch the monitor committed.",
)
BACKLOG = _get_or_create(
    Gauge,
    "konan_monitor_backlog_records",
    "Records waiting in the log stream (spool segments or Redis group lag + pending).",
)
STREAM_LOST = _get_or_create(
    Counter,
    "konan_monitor_stream_lost",
    "Times the monitor found the Redis stream or its consumer group gone (a Redis restart "
    "without persistence, a FLUSHALL, a DEL): records not yet consumed then were lost.",
)
SPOOLED = _get_or_create(
    Counter,
    "konan_log_spooled",
    "Prediction records written to the local on-disk spool by a producer.",
)
REPLAYED = _get_or_create(
    Counter,
    "konan_log_replayed",
    "Spooled prediction records forwarded to the log stream after it came back.",
)
SHED = _get_or_create(
    Counter,
    "konan_log_shed",
    "Prediction records a producer could not accept (queue full, spool full, unencodable, closed).",
    labelnames=("reason",),
)
# Set by the worker (konan/worker/app.py) when konan.monitoring.evaluate_alerts succeeds. That
# task sets konan_alerts_firing in whichever worker runs it, so with several workers each one
# holds the counts of its own last run: queries keep the worker whose run is newest.
ALERTS_EVALUATED = _get_or_create(
    Gauge,
    "konan_alerts_evaluated_timestamp_seconds",
    "Unix time this worker last finished konan.monitoring.evaluate_alerts (0: not since start); "
    "its konan_alerts_firing is as of that run.",
)
SPOOL_BYTES = _get_or_create(
    Gauge,
    "konan_log_spool_bytes",
    "Bytes held in the local spool (open and sealed segments), as last measured by its writer.",
)


def serve_metrics(
    host: str, port: int, *, port_setting: str, host_setting: str
) -> Callable[[], None]:
    """Serve the default registry on http://host:port/ (any path, `/metrics` included) from a
    daemon thread; returns the function that stops it. A port that cannot be bound (in use,
    not permitted, an unknown host) raises ConfigError naming both settings."""
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({reason}); "
            f"check {port_setting} and {host_setting}"
        ) from None

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return close
