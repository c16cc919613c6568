"""The server's metrics, mirrored into Ray's metrics system so that they add up across replicas.

Each replica keeps its own Prometheus registry (`GET /metrics` through the proxy
answers from whichever replica the request reached; `X-Cadenza-Replica` says which).
`mirror_to_ray` makes every observation also go to a `ray.util.metrics` metric of
the same name, labels and buckets, plus a `replica` tag. Ray exports them from each
node's metrics port (`ray start --metrics-export-port=PORT`) with the prefix `ray_`
(`ray_cadenza_ttfa_seconds_bucket{model, endpoint, replica, ...}`), next to Ray
Serve's own `ray_serve_*` metrics; Prometheus sums them over replicas. The gauges
(active streams, queue depth) are read every `GAUGE_PERIOD_S` seconds.
"""
from __future__ import annotations

import threading
import time

from ray.util import metrics as ray_metrics

from ..metrics import LATENCY_BUCKETS, ServerMetrics

GAUGE_PERIOD_S = 5.0

# ServerMetrics attribute -> (exported name, kind, label names, description)
MIRRORED = {
    "ttfa": ("cadenza_ttfa_seconds", "histogram", ("model", "endpoint"), "Request arrival to first audio bytes sent"),
    "gap": ("cadenza_inter_chunk_gap_seconds", "histogram", ("model",), "Time between consecutive audio sends"),
    "underruns": ("cadenza_underruns_total", "counter", ("model",), "Chunks that came after the audio had played"),
    "audio": ("cadenza_audio_seconds_total", "counter", ("model",), "Seconds of audio sent"),
    "streams": ("cadenza_streams_total", "counter", ("model", "endpoint", "outcome"), "Speech streams by outcome"),
    "errors": ("cadenza_errors_total", "counter", ("type",), "Error responses and events by type"),
    "active": ("cadenza_active_streams", "gauge", ("model",), "Streams holding a KV slot"),
    "queued": ("cadenza_queue_depth", "gauge", ("model",), "Streams waiting for a KV slot"),
}


class _Child:
    """One labelled series: the Prometheus child and the Ray metric with its tags."""

    def __init__(self, prom, ray_metric, tags: dict, gauges: list):
        self.prom, self.ray, self.tags, self.gauges = prom, ray_metric, tags, gauges

    def inc(self, amount: float = 1.0) -> None:
        self.prom.inc(amount)
        if amount > 0:
            self.ray.inc(amount, tags=self.tags)

    def observe(self, value: float) -> None:
        self.prom.observe(value)
        self.ray.observe(value, tags=self.tags)

    def set_function(self, fn) -> None:
        self.prom.set_function(fn)
        self.gauges.append((fn, self.ray, self.tags))


class _Mirrored:
    """A Prometheus metric whose `.labels(...)` children also record to Ray."""

    def __init__(self, prom, ray_metric, label_names: tuple, replica: str, gauges: list):
        self.prom, self.ray, self.label_names = prom, ray_metric, label_names
        self.replica, self.gauges = replica, gauges

    def labels(self, *values) -> _Child:
        tags = {**dict(zip(self.label_names, map(str, values))), "replica": self.replica}
        return _Child(self.prom.labels(*values), self.ray, tags, self.gauges)


def _ray_metric(name: str, kind: str, labels: tuple, doc: str):
    keys = (*labels, "replica")
    if kind == "histogram":
        return ray_metrics.Histogram(name, doc, boundaries=list(LATENCY_BUCKETS), tag_keys=keys)
    if kind == "counter":
        return ray_metrics.Counter(name, doc, tag_keys=keys)
    return ray_metrics.Gauge(name, doc, tag_keys=keys)


def mirror_to_ray(metrics: ServerMetrics, replica: str) -> None:
    """Make `metrics` (the app's, before its engines load) also record to Ray, tagged `replica`."""
    gauges: list = []
    for attr, (name, kind, labels, doc) in MIRRORED.items():
        setattr(metrics, attr, _Mirrored(getattr(metrics, attr), _ray_metric(name, kind, labels, doc), labels,
                                         replica, gauges))

    def publish():  # for the replica's lifetime (a daemon thread of its process)
        while True:
            time.sleep(GAUGE_PERIOD_S)
            for fn, gauge, tags in list(gauges):
                try:
                    gauge.set(fn(), tags=tags)
                except Exception:  # noqa: BLE001 - a closing engine: skip this reading
                    pass

    threading.Thread(target=publish, name="cadenza-ray-gauges", daemon=True).start()


__all__ = ["mirror_to_ray", "MIRRORED", "GAUGE_PERIOD_S"]
