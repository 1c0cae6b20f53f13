"""Prometheus metrics of ``mlops serve``: requests, latency, arms, features, swaps, log.

One registry per server. With several workers, prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``serve.run`` before the workers start) sums the
workers' files, so ``/metrics`` of any worker reports the whole server (with a ``pid``
label on the gauges). One worker also reports its memory and CPU (``process_*``).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops.predictor import Arms

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
WORKERS_ENV = "MLOPS_SERVE_WORKERS"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The server's counters, histograms and gauges, named as Prometheus expects."""

    def __init__(self) -> None:
        """Create the metrics in a registry of their own."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # Feast sets PROMETHEUS_MULTIPROC_DIR for its own metrics when it is imported, so
        # the variable alone does not mean several workers: ``serve.run`` says so.
        self.multiprocess = os.environ.get(WORKERS_ENV, "1") != "1"
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlops_serve_requests_total",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        self.errors = Counter(
            "mlops_serve_errors_total",
            "Requests answered with a 4xx or 5xx status, by status code.",
            ["status"],
            registry=r,
        )
        self.latency = Histogram(
            "mlops_serve_request_duration_seconds",
            "Time from request to response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "mlops_serve_predictions_total",
            "Rows predicted, by arm (champion, challenger, shadow) and model version.",
            ["arm", "model_version"],
            registry=r,
        )
        self.arm_latency = Histogram(
            "mlops_serve_arm_request_duration_seconds",
            "Prediction request latency by the arm that answered.",
            ["arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_latency = Histogram(
            "mlops_serve_feature_read_duration_seconds",
            "Online feature store reads.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_rows = Counter(
            "mlops_serve_feature_rows_total",
            "Rows whose features were read from the online store.",
            registry=r,
        )
        self.swaps = Counter(
            "mlops_serve_model_swaps_total",
            "Times a moved alias was loaded and swapped in.",
            registry=r,
        )
        mode = {"multiprocess_mode": "liveall"} if self.multiprocess else {}
        self.loaded = Gauge(
            "mlops_serve_model_info",
            "The version each arm serves (1 while loaded).",
            ["arm", "model_name", "model_version"],
            registry=r,
            **mode,  # type: ignore[arg-type]
        )
        self.degraded = Gauge(
            "mlops_serve_registry_degraded",
            "1 while the registry cannot be read and the loaded versions are kept.",
            registry=r,
            **({"multiprocess_mode": "livemax"} if self.multiprocess else {}),  # type: ignore[arg-type]
        )
        self.log_rows = Counter(
            "mlops_serve_log_rows_total",
            "Rows appended to the prediction log.",
            registry=r,
        )
        if not self.multiprocess:  # a worker's own process metrics would not add up
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=r)  # process_resident_memory_bytes, _cpu_seconds_total

    def swapped(self, new: Arms, old: Arms | None) -> None:
        """Record a swap (or the first load) and which versions are now served."""
        if old is not None:
            self.swaps.inc()
            for m in (old.champion, old.challenger):
                if m is not None:
                    with contextlib.suppress(KeyError):
                        self.loaded.remove(m.arm, m.loaded.name, m.loaded.version)
        for m in (new.champion, new.challenger):
            if m is not None:
                self.loaded.labels(m.arm, m.loaded.name, m.loaded.version).set(1)

    def render(self) -> bytes:
        """The exposition text of this server (all workers in multiprocess mode)."""
        from prometheus_client import CollectorRegistry, generate_latest

        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)
