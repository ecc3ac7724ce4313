"""Prometheus metrics of one app (its own registry, so several apps in one process never clash)."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..contract import IN_DISTRIBUTION_OUTPUT

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("skinonnx_requests", "HTTP requests by route and status code",
                                ("route", "status"), registry=self.registry)
        self.latency = Histogram("skinonnx_request_seconds", "Request latency (receive to response), by route",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("skinonnx_batch_rows", "Rows per ONNX Runtime call (dynamic batching)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.errors = Counter("skinonnx_errors", "Refused or failed requests by kind", ("kind",),
                              registry=self.registry)
        self.queue_depth = Gauge("skinonnx_queue_depth", "Requests waiting for the model", registry=self.registry)
        self.inferences = Counter("skinonnx_inference_rows", "Rows (images) run through the model",
                                  registry=self.registry)
        self.not_assessed = Counter("skinonnx_not_assessed_rows", "Rows the model's in_distribution output refused "
                                    "(not assessed: unlike the training images)", registry=self.registry)

    def observe_batch(self, rows: int) -> None:
        self.batch_rows.observe(rows)
        self.inferences.inc(rows)

    def observe_decisions(self, outputs: dict[str, np.ndarray]) -> None:
        """Count the rows the graph refused (its ``in_distribution`` output), for /classify and v2 alike."""
        inside = outputs.get(IN_DISTRIBUTION_OUTPUT)
        if inside is not None:
            self.not_assessed.inc(int(np.count_nonzero(~np.asarray(inside, bool))))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
