"""Stream metrics: playback underruns / stalls on handcrafted arrival times, and TTFA and
audio length measured on a real stream where the caller sees the audio."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from cadenza.engine.runtime.metrics import StreamMetrics, percentile
from support import read


def _metrics(arrivals, samples, sample_rate=10, t_end=None):
    m = StreamMetrics(sample_rate, frame_rate=1.0, n_codebooks=4)
    m.arrivals, m.chunk_samples, m.t_end = list(arrivals), list(samples), t_end
    return m


@pytest.mark.parametrize("arrivals, samples, underruns, stall", [
    pytest.param([], [], 0, 0.0, id="no-chunks"),
    pytest.param([0.3], [10], 0, 0.0, id="one-chunk"),
    # each chunk arrives while the previous audio still plays
    pytest.param([0.5, 1.0, 1.9, 2.0], [10, 10, 10, 10], 0, 0.0, id="on-time"),
    # an arrival exactly when the audio runs out is not an underrun
    pytest.param([1.0, 2.0, 3.0], [10, 10, 10], 0, 0.0, id="just-in-time"),
    # clock: 1.0 -> 2.0 -> 2.5; the third arrives at 3.0: one underrun of 0.5 s, playback resumes at 3.0
    pytest.param([1.0, 1.5, 3.0, 3.2], [10, 5, 10, 10], 1, 0.5, id="one-underrun"),
    # clock: 0 -> 1; 2.0 late by 1.0 -> 3; 2.5 -> 3.5; 5.0 late by 1.5
    pytest.param([0.0, 2.0, 2.5, 5.0], [10, 10, 5, 10], 2, 2.5, id="two-underruns"),
    # a late chunk resets the clock: the next one is judged against the late one's end (5.0 + 1.0 = 6.0)
    pytest.param([0.0, 5.0, 5.9], [10, 10, 10], 1, 4.0, id="clock-resets"),
])
def test_playback(arrivals, samples, underruns, stall):
    u, s = _metrics(arrivals, samples).playback()
    assert u == underruns
    assert s == pytest.approx(stall, abs=1e-12)


def test_summary_derived_numbers():
    m = _metrics([0.2, 0.5, 3.0], [10, 10, 20], sample_rate=10, t_end=3.1)
    m.frame_times = [0.1, 0.15, 0.3, 0.35]
    s = m.summary()
    assert s["ttfa_s"] == 0.2 and s["audio_s"] == 4.0 and s["chunks"] == 3 and s["frames"] == 4
    assert s["rtf"] == pytest.approx(3.1 / 4.0) and s["x_real_time"] == pytest.approx(4.0 / 3.1)
    assert s["inter_chunk_gap_max_s"] == pytest.approx(2.5)
    assert (s["underruns"], s["stall_s"]) == (1, pytest.approx(0.8))  # clock 0.2 -> 1.2 -> 2.2; 3.0 late by 0.8
    assert s["codes_per_audio_s"] == 4.0 and s["frames_per_audio_s"] == 1.0


def test_empty_metrics():
    m = _metrics([], [])
    assert math.isnan(m.ttfa) and m.audio_seconds == 0
    s = m.summary()
    assert math.isnan(s["rtf"]) and s["chunks"] == 0 and s["underruns"] == 0


def test_percentile():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4, 5], 0) == 1 and percentile([1, 2, 3, 4, 5], 100) == 5
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert math.isnan(percentile([], 50))


def test_ttfa_runs_from_the_stream_call_to_the_first_chunk_handed_out(engine):
    t0 = time.perf_counter()
    s = engine.stream("Time to first audio.", greedy=True)
    time.sleep(0.2)  # generation is long done; the caller has not looked yet
    it = iter(s)
    first = next(it)
    seen = time.perf_counter() - t0
    assert 0.2 <= s.metrics.ttfa <= seen
    rest = list(it)
    pcm = np.concatenate([first.pcm, *(c.pcm for c in rest)])
    m = s.metrics
    assert m.audio_seconds == len(pcm) / engine.sample_rate  # PCM samples only: no header, no padding
    assert len(pcm) == s.codes.shape[1] * engine.hop
    summary = m.summary()
    assert summary["audio_s"] == m.audio_seconds and summary["chunks"] == 1 + len(rest)
    assert summary["frames"] == s.codes.shape[1]
    assert summary["total_s"] >= summary["ttfa_s"]
    assert summary["rtf"] == pytest.approx(summary["total_s"] / summary["audio_s"])


def test_ttfa_without_waiting_is_small_and_frames_are_timed(engine):
    s = engine.stream("Quick.", frames=6, greedy=True)
    res = read(s)
    m = s.metrics
    assert 0 < m.ttfa < 5
    assert m.frames == 6 and len(m.frame_latencies()) == 5
    assert all(b >= a for a, b in zip(m.frame_times, m.frame_times[1:]))
    assert len(m.arrivals) == len(res.chunks) and m.arrivals == sorted(m.arrivals)
