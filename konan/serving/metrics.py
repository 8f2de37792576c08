"""Prometheus metrics of one model server, on its own registry.

The predict path only bumps plain ints in dicts (a dict increment, no lock, no label lookup);
a custom collector turns them into metric families when /metrics is scraped. Every counter is
written by one thread only — the event loop, or the shadow worker for its own — so the scrape,
which copies each dict first, never sees a torn update.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Fixed buckets, counted with one bisect; read by the collector at scrape time."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        counts = list(self.counts)
        for bound, count in zip(LATENCY_BUCKETS, counts, strict=False):
            running += count
            out.append((repr(bound), float(running)))
        running += counts[-1]
        out.append(("+Inf", float(running)))
        return out


RequestKey = tuple[int | None, str, int]
"""(model version or None when rejected before routing, role or "", HTTP status)."""


class ServingMetrics:
    def __init__(self) -> None:
        self.requests: defaultdict[RequestKey, int] = defaultdict(int)
        self.shadow_requests: defaultdict[RequestKey, int] = defaultdict(int)  # shadow thread
        self.latency: dict[int, Histogram] = {}
        self.rejections: defaultdict[str, int] = defaultdict(int)
        self.log_shed = 0  # 503s answered because the log pipeline refused the record
        self.shadow_dropped = 0  # shadow work refused because the shadow queue was full
        self.shadow_log_shed = 0  # shadow thread
        self.key_refresh_failures = 0  # key thread
        # name -> (help, callable): values owned elsewhere, read at scrape time.
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def histogram(self, version: int) -> Histogram:
        found = self.latency.get(version)
        if found is None:
            found = self.latency[version] = Histogram()
        return found

    def render(self) -> bytes:
        """This server's metrics, then the process-wide ones (log pipeline, process stats)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


def _request_samples(family: CounterMetricFamily, counts: Iterable[tuple[RequestKey, int]]) -> None:
    for (version, role, status), value in counts:
        family.add_metric(["" if version is None else str(version), role, str(status)], value)


class _Collector(Collector):
    def __init__(self, metrics: ServingMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        requests = CounterMetricFamily(
            "konan_serving_requests",
            "Predict requests by model version, role (champion, canary, shadow) and status.",
            labels=["version", "role", "status"],
        )
        _request_samples(requests, m.requests.copy().items())
        _request_samples(requests, m.shadow_requests.copy().items())
        yield requests

        latency = HistogramMetricFamily(
            "konan_serving_latency_seconds",
            "Time from request to answer of predictions that reached a model, by version.",
            labels=["version"],
        )
        for version, hist in sorted(m.latency.copy().items()):
            latency.add_metric([str(version)], hist.buckets(), hist.total)
        yield latency

        rejections = CounterMetricFamily(
            "konan_serving_rejections",
            "Predict requests refused before the model was called, by reason.",
            labels=["reason"],
        )
        for reason, value in sorted(m.rejections.copy().items()):
            rejections.add_metric([reason], value)
        yield rejections

        yield CounterMetricFamily(
            "konan_serving_shadow_dropped",
            "Shadow predictions skipped because the shadow queue was full.",
            value=m.shadow_dropped,
        )
        shed = CounterMetricFamily(
            "konan_serving_log_shed",
            "Prediction records the log pipeline refused (primary answered 503; shadow lost).",
            labels=["role"],
        )
        shed.add_metric(["primary"], m.log_shed)
        shed.add_metric(["shadow"], m.shadow_log_shed)
        yield shed
        yield CounterMetricFamily(
            "konan_serving_key_refresh_failures",
            "Failed calls to the control plane's key endpoint.",
            value=m.key_refresh_failures,
        )
        for name, (doc, read) in sorted(m.gauges.copy().items()):
            yield GaugeMetricFamily(name, doc, value=float(read()))
        for name, (doc, read) in sorted(m.counters.copy().items()):
            yield CounterMetricFamily(name, doc, value=float(read()))
