"""What one benchmarked stream measured, and the statistics over many streams.

Every engine (Cadenza's and the baselines) hands back the same records, so the
numbers are computed by one piece of code:

- `StreamRecord`: one stream. Times are seconds from the *call* that started
  it (`queue_s` is how long the request waited before that call: sequential
  baselines serve N requests one after another). `arrivals` are the moments a
  chunk of PCM was in the caller's hands; `chunk_samples` count PCM samples
  only (no container header, no padding), so `audio_s` is exact.
- `RunRecord`: one timed run of a scenario (N streams), with its wall time
  (first request -> last stream done) and the process CPU time it used.

Underruns and stall time come from `cadenza.engine.runtime.metrics.StreamMetrics`
(playback starts when the first chunk arrives and runs in real time).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from itertools import pairwise

from cadenza.engine.runtime.metrics import StreamMetrics, percentile

SAMPLING = {"temperature": 0.9, "top_k": 50, "top_p": 1.0}  # every engine of the bench samples with these


def _r(x: float) -> float:
    """Microsecond rounding keeps the raw samples in the JSON readable."""
    return round(float(x), 6)


@dataclass
class StreamRecord:
    """One stream, timed from its call (see the module docstring)."""

    sample_rate: int
    frame_rate: float
    n_codebooks: int
    frame_times: list[float] = field(default_factory=list)  # s since the call, per generated frame
    arrivals: list[float] = field(default_factory=list)  # s since the call, per chunk handed to the caller
    chunk_samples: list[int] = field(default_factory=list)  # PCM samples per chunk
    total_s: float = float("nan")  # call -> end of the stream
    queue_s: float = 0.0  # request arrival -> the call

    @classmethod
    def from_metrics(cls, m: StreamMetrics, queue_s: float = 0.0) -> StreamRecord:
        """Copy a finished `StreamMetrics` whose `t_start` was the moment of the call."""
        return cls(m.sample_rate, m.frame_rate, m.n_codebooks, [_r(t) for t in m.frame_times],
                   [_r(t) for t in m.arrivals], list(m.chunk_samples),
                   _r(m.t_end if m.t_end is not None else float("nan")), _r(queue_s))

    def metrics(self) -> StreamMetrics:
        """The same record as a `StreamMetrics` (for its playback model and summary)."""
        return StreamMetrics(self.sample_rate, self.frame_rate, self.n_codebooks, t_start=0.0,
                             arrivals=list(self.arrivals), chunk_samples=list(self.chunk_samples),
                             frame_times=list(self.frame_times), t_end=self.total_s)

    @property
    def ttfa_s(self) -> float:
        """Request arrival -> first PCM in the caller's hands (includes any queueing)."""
        return self.queue_s + (self.arrivals[0] if self.arrivals else float("nan"))

    @property
    def audio_s(self) -> float:
        return sum(self.chunk_samples) / self.sample_rate

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    def frame_latencies(self) -> list[float]:
        """Seconds between consecutive frames of this stream (the per-frame latency)."""
        t = self.frame_times
        return [b - a for a, b in pairwise(t)]

    def gaps(self) -> list[float]:
        a = self.arrivals
        return [y - x for x, y in pairwise(a)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunRecord:
    """One timed run of a scenario: its streams, wall time and process CPU time."""

    streams: list[StreamRecord]
    wall_s: float
    cpu_s: float

    @property
    def audio_s(self) -> float:
        return sum(s.audio_s for s in self.streams)

    @property
    def agg_x_real_time(self) -> float:
        """Aggregate x-real-time: all streams' audio over the run's wall time."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"wall_s": _r(self.wall_s), "cpu_s": _r(self.cpu_s), "audio_s": _r(self.audio_s),
                "streams": [s.to_dict() for s in self.streams]}


class Clock:
    """Wall and process-CPU time of a run (process CPU time counts every thread)."""

    def __init__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.t0, time.process_time() - self.c0


def median(xs: list[float]) -> float:
    return percentile([x for x in xs if not math.isnan(x)], 50)


def summarize(runs: list[RunRecord], cores: int) -> tuple[dict, dict]:
    """Row metrics and raw samples of a scenario's timed runs.

    Args:
        runs: the timed runs (warm-up already discarded).
        cores: cores the engine may keep busy (the cost figure's multiplier).
    Returns:
        (metrics, samples): metrics use the names of `definitions()`.
    """
    streams = [s for r in runs for s in r.streams]
    ttfa = [s.ttfa_s for s in streams]
    frame = [x for s in streams for x in s.frame_latencies()]
    gaps = [x for s in streams for x in s.gaps()]
    play = [s.metrics().playback() for s in streams]
    audio = [s.audio_s for s in streams]
    agg = [r.agg_x_real_time for r in runs]
    m = {
        "ttfa_p50": percentile(ttfa, 50), "ttfa_p95": percentile(ttfa, 95),
        "frame_p50": percentile(frame, 50), "frame_p99": percentile(frame, 99),
        "gap_max": max(gaps) if gaps else 0.0,
        "underruns": sum(u for u, _ in play), "stall": sum(st for _, st in play),
        "rtf": median([s.total_s / s.audio_s for s in streams if s.audio_s]),
        "x_real_time": median([s.audio_s / s.total_s for s in streams if s.total_s > 0]),
        "agg_x_real_time": median(agg),
        "codes_per_audio_s": sum(s.frames for s in streams) * streams[0].n_codebooks / sum(audio),
        "core_s_per_audio_s": median([r.wall_s * cores / r.audio_s for r in runs]),
        "cpu_s_per_audio_s": median([r.cpu_s / r.audio_s for r in runs]),
        "first_chunk_frames": max(round(s.chunk_samples[0] * s.frame_rate / s.sample_rate) for s in streams),
        "audio_per_stream": median(audio), "streams_timed": len(streams),
    }
    samples = {"ttfa_s": [_r(x) for x in ttfa], "frame_latency_s": [_r(x) for x in frame],
               "agg_x_real_time": [_r(x) for x in agg], "runs": [r.to_dict() for r in runs]}
    return m, samples


def step_vs_position(rec: StreamRecord, prompt_len: int, positions: list[int], half_width: int = 8) -> dict:
    """Median time per frame near each cache position, from one long stream.

    The step that produces frame i (i >= 1) reads a cache of prompt_len + i - 1
    entries; latencies of steps within `half_width` of a position are pooled.
    Returns {"step_p50_pos<P>": seconds} (nan where the stream never got there).
    """
    lat = rec.frame_latencies()
    out = {}
    for p in positions:
        near = [x for i, x in enumerate(lat, start=1) if abs(prompt_len + i - 1 - p) <= half_width]
        out[f"step_p50_pos{p}"] = percentile(near, 50)
    return out


LOWER_IS_BETTER = ("ttfa_p50", "ttfa_p95", "frame_p50", "frame_p99", "gap_max", "rtf", "peak_rss",
                   "core_s_per_audio_s", "cpu_s_per_audio_s")
HIGHER_IS_BETTER = ("x_real_time", "agg_x_real_time")


def definitions() -> dict:
    """What every metric means, stored in the JSON next to the numbers."""
    return {
        "units": "times in seconds, peak_rss in MiB",
        "ttfa": "request arrival -> first PCM sample in the caller's hands; for N sequential baseline "
                "streams the later ones include their wait; baselines decode their first frame with the codec",
        "frame": "time between consecutive frames of one stream (per-frame latency; for the baselines it includes "
                 "the codec decode they run between frames, Cadenza decodes on a second thread); p50 / p99 over all",
        "gap_max": "largest time between consecutive chunks of one stream",
        "first_chunk_frames": "frames of audio in the first chunk (largest over the streams)",
        "underruns, stall": "playback from the first chunk in real time; a late chunk is an underrun and "
                            "its wait is stall (cadenza.engine.runtime.metrics); totals over all timed streams",
        "rtf, x_real_time": "per stream: total time / audio seconds and its inverse; medians",
        "agg_x_real_time": "all streams' audio seconds / the run's wall time; median over runs",
        "peak_rss": "peak resident memory (getrusage ru_maxrss) of the process that ran this engine "
                    "(its own process per engine x scenario unless --no-isolate)",
        "codes_per_audio_s": "codes generated (frames x codebooks) per second of audio",
        "core_s_per_audio_s": "cost: wall seconds x cores the engine may use (min(cpu count, threads + "
                              "helper threads)) / audio seconds; median over runs",
        "cpu_s_per_audio_s": "measured process CPU seconds (all threads) / audio seconds; median over runs",
        "step_p50_pos<P>": "median time per frame for steps reading a cache of about P positions (+-8), "
                           "one long stream",
        "audio": "PCM samples handed to the caller / sample rate: no headers, no padding",
        "load": "seconds to load the engine, not in any timing above (a scenario's engines load at once, in "
                "parallel processes)",
    }
