"""Per-stream metrics, measured where the caller sees the audio.

Time-to-first-audio runs from the `stream()` call to the moment the first
chunk of PCM is handed to the caller. Playback is modelled as starting when
that first chunk arrives and running in real time: a chunk that arrives after
the audio before it has finished playing is an underrun, and the wait is
stall time (playback then resumes from the late chunk). Audio length counts
PCM samples only (no container header, no padding).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile of `xs` (q in [0, 100]); nan for an empty list."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class StreamMetrics:
    sample_rate: int
    frame_rate: float
    n_codebooks: int
    t_start: float = field(default_factory=time.perf_counter)
    arrivals: list[float] = field(default_factory=list)  # seconds since t_start, per chunk handed out
    chunk_samples: list[int] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)  # seconds since t_start, per generated frame
    t_end: float | None = None
    segments: int = 1
    seed: int | None = None
    text_waits: list[float] = field(default_factory=list)  # seconds since t_start: text came after a wait

    def on_text(self) -> None:
        """Incremental text: the stream's next segment came after the stream had waited for it."""
        self.text_waits.append(time.perf_counter() - self.t_start)

    def on_frame(self) -> None:
        self.frame_times.append(time.perf_counter() - self.t_start)

    def on_chunk(self, n_samples: int) -> None:
        self.arrivals.append(time.perf_counter() - self.t_start)
        self.chunk_samples.append(n_samples)

    def on_end(self) -> None:
        self.t_end = time.perf_counter() - self.t_start

    # --- derived ------------------------------------------------------------
    @property
    def ttfa(self) -> float:
        return self.arrivals[0] if self.arrivals else float("nan")

    @property
    def audio_seconds(self) -> float:
        return sum(self.chunk_samples) / self.sample_rate

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    def playback(self) -> tuple[int, float]:
        """(underruns, total stall seconds) with playback starting at the first chunk. Incremental
        text: a chunk late because the text itself came after the audio ran out is no underrun
        (playback restarts at that chunk)."""
        underruns, stall = 0, 0.0
        if not self.arrivals:
            return 0, 0.0
        clock = self.arrivals[0]  # when the audio so far will have finished playing
        for arrival, n in zip(self.arrivals, self.chunk_samples):
            if arrival > clock + 1e-9:
                if not any(clock <= t < arrival for t in self.text_waits):
                    underruns += 1
                    stall += arrival - clock
                clock = arrival
            clock += n / self.sample_rate
        return underruns, stall

    def frame_latencies(self) -> list[float]:
        """Seconds between consecutive frames (per-frame latency of generation)."""
        t = self.frame_times
        return [b - a for a, b in zip(t, t[1:])]

    def summary(self) -> dict:
        underruns, stall = self.playback()
        gaps = [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]
        audio = self.audio_seconds
        total = self.t_end if self.t_end is not None else (self.arrivals[-1] if self.arrivals else float("nan"))
        fl = self.frame_latencies()
        return {
            "ttfa_s": self.ttfa, "total_s": total, "audio_s": audio,
            "rtf": total / audio if audio else float("nan"),
            "x_real_time": audio / total if total else float("nan"),
            "chunks": len(self.arrivals), "frames": self.frames, "segments": self.segments,
            "inter_chunk_gap_max_s": max(gaps) if gaps else 0.0,
            "underruns": underruns, "stall_s": stall,
            "frame_latency_p50_s": percentile(fl, 50), "frame_latency_p99_s": percentile(fl, 99),
            "frames_per_audio_s": self.frame_rate, "codes_per_audio_s": self.frame_rate * self.n_codebooks,
            "seed": self.seed,
        }
