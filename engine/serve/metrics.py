"""`/metrics`: Prometheus metrics of the server, in a registry of its own (one per app).

Measured where the client sees audio: time-to-first-audio from the request's
arrival to its first audio bytes handed to the server, the gaps between audio
sends, audio seconds sent; underruns from each engine stream's playback model;
active streams and queue depth read from each engine's scheduler at scrape time.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """The server's metrics; `model` labels are the loaded bundles' names."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds (Linux)
        self.ttfa = Histogram("cadenza_ttfa_seconds", "Request arrival to its first audio bytes sent",
                              ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.gap = Histogram("cadenza_inter_chunk_gap_seconds", "Time between consecutive audio sends of a stream",
                             ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.underruns = Counter("cadenza_underruns_total", "Chunks that came after the audio before them had "
                                 "played (real-time playback from the first chunk)", ["model"], registry=r)
        self.audio = Counter("cadenza_audio_seconds_total", "Seconds of audio sent", ["model"], registry=r)
        self.streams = Counter("cadenza_streams_total", "Speech streams by endpoint and outcome",
                               ["model", "endpoint", "outcome"], registry=r)
        self.errors = Counter("cadenza_errors_total", "Error responses and events by type", ["type"], registry=r)
        self.active = Gauge("cadenza_active_streams", "Streams holding a KV slot", ["model"], registry=r)
        self.queued = Gauge("cadenza_queue_depth", "Streams waiting for a KV slot", ["model"], registry=r)

    def watch(self, name: str, engine) -> None:
        """Report `engine`'s active streams and queue depth under `name` at every scrape."""
        self.active.labels(name).set_function(lambda: engine.scheduler.active)
        self.queued.labels(name).set_function(lambda: engine.scheduler.queued)
        self.underruns.labels(name)  # exported as 0 from the start
        self.audio.labels(name)

    def finished(self, model: str, endpoint: str, stream, outcome: str) -> None:
        """A speech stream ended: its underruns and outcome."""
        try:
            underruns = stream.metrics.playback()[0] if stream is not None else 0
        except Exception:  # noqa: BLE001 - metrics never fail a request
            underruns = 0
        if underruns:
            self.underruns.labels(model).inc(underruns)
        self.streams.labels(model, endpoint, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["ServerMetrics", "LATENCY_BUCKETS"]
