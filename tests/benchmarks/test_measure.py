"""What a benchmark measures: TTFA from the call to the first PCM handed to the caller,
audio length from PCM samples only, per-frame latency and step time vs position.

Fake engines with known delays pin the definitions down; the real engine is
checked with a delay added in front of its `stream` call.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from cadenza.benchmarks.baselines import drive
from cadenza.benchmarks.measure import RunRecord, StreamRecord, step_vs_position, summarize
from cadenza.benchmarks.runners import CadenzaRunner, SequentialRunner, measure_engine_stream
from cadenza.engine.runtime.metrics import StreamMetrics

SR, HOP, FPS, K = 24_000, 1920, 12.5, 4
CALL_DELAY, FIRST_CHUNK_DELAY, GAP = 0.05, 0.03, 0.2


class FakeStream:
    """Yields chunks of known sizes; its own metrics start *after* the call's work (as an engine's may)."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.metrics = StreamMetrics(SR, FPS, K)  # t_start: after the call's delay
        self.metrics.frame_times = [0.001 * (i + 1) for i in range(len(sizes))]

    def __iter__(self):
        time.sleep(FIRST_CHUNK_DELAY)
        for i, n in enumerate(self.sizes):
            if i == 1:
                time.sleep(GAP)  # after the first chunk: TTFA must not include it
            yield type("Chunk", (), {"pcm": np.zeros(n, np.float32)})()


class FakeEngine:
    sample_rate, frame_rate, n_codebooks = SR, FPS, K

    def __init__(self, sizes):
        self.sizes = sizes

    def stream(self, text, frames, seed, **sampling):
        time.sleep(CALL_DELAY)  # work inside the call counts towards TTFA
        return FakeStream(self.sizes)

    def close(self):
        pass


def test_ttfa_counts_from_the_call_to_the_first_pcm_in_hand():
    rec = measure_engine_stream(FakeEngine([HOP, 2 * HOP, HOP]), "hi", 4, 0)
    assert rec.ttfa_s >= CALL_DELAY + FIRST_CHUNK_DELAY  # the call's work and the wait for the first chunk
    assert rec.ttfa_s == rec.arrivals[0] and rec.arrivals[1] - rec.ttfa_s >= GAP  # and nothing after it
    # the engine's own frame stamps are moved onto the call's clock
    assert rec.frame_times[0] >= CALL_DELAY + 0.001


def test_audio_is_pcm_samples_only_no_header_no_padding():
    rec = measure_engine_stream(FakeEngine([HOP, 2 * HOP, 0, HOP]), "hi", 4, 0)  # an empty trailing chunk too
    assert rec.chunk_samples == [HOP, 2 * HOP, 0, HOP]
    assert rec.audio_s == 4 * HOP / SR  # exactly; a 44-byte WAV header would break the equality


class FakeSource:
    """A FrameSource with known costs: prefill, frame and decode."""

    sample_rate, hop, frame_rate, n_codebooks = SR, HOP, FPS, K

    def begin(self, text, seed):
        time.sleep(0.04)

    def next_frame(self):
        time.sleep(0.005)
        return np.zeros(K, np.int64)

    def decode(self, codes):
        time.sleep(0.005)
        return np.zeros(codes.shape[1] * HOP, np.float32)

    def close(self):
        pass


def test_baseline_driver_decodes_the_first_frame_for_first_audio():
    rec = drive(FakeSource(), "hi", 10, 0)
    assert rec.chunk_samples[0] == HOP  # the first chunk is the first frame alone
    assert 0.04 + 0.005 + 0.005 <= rec.ttfa_s < 0.2
    assert rec.frames == 10 and rec.audio_s == 10 * HOP / SR
    assert all(x >= 0.005 for x in rec.frame_latencies())
    assert sum(rec.chunk_samples) == 10 * HOP and len(rec.chunk_samples) < 10  # chunks grew


def test_sequential_streams_wait_and_their_ttfa_includes_the_wait():
    run = SequentialRunner(FakeSource()).run(3, "hi", 4, 0)
    q = [s.queue_s for s in run.streams]
    assert q[0] < 0.01 and q[1] > 0.05 and q[2] > q[1]
    assert run.streams[2].ttfa_s > run.streams[0].ttfa_s + 0.1
    assert run.audio_s == 12 * HOP / SR and run.wall_s >= sum(s.total_s for s in run.streams)


def test_concurrent_runner_starts_streams_together():
    run = CadenzaRunner("unused", 1, 3, engine=FakeEngine([HOP, HOP])).run(3, "hi", 2, 0)
    assert len(run.streams) == 3 and all(s.queue_s < 0.02 for s in run.streams)
    one = CALL_DELAY + FIRST_CHUNK_DELAY + GAP
    assert run.wall_s < 2 * one  # overlapped: three streams one after another would take 3x
    assert run.agg_x_real_time == pytest.approx(run.audio_s / run.wall_s)


def test_real_engine_ttfa_includes_a_delay_before_its_call(tiny_bundle):
    from cadenza.engine import Engine

    class Delayed:
        def __init__(self, engine):
            self.engine = engine
            self.sample_rate, self.frame_rate, self.n_codebooks = engine.sample_rate, engine.frame_rate, K

        def stream(self, *a, **kw):
            time.sleep(0.1)
            return self.engine.stream(*a, **kw)

    with Engine.load(tiny_bundle, threads=1, max_streams=1) as engine:
        plain = measure_engine_stream(engine, "Hello there.", 6, 0)
        slow = measure_engine_stream(Delayed(engine), "Hello there.", 6, 0)
    assert slow.ttfa_s >= 0.1 and slow.ttfa_s > plain.ttfa_s
    for rec in (plain, slow):
        assert rec.audio_s == 6 * engine.hop / engine.sample_rate and rec.frames == 6
        assert rec.arrivals[0] <= rec.arrivals[-1] <= rec.total_s


def test_summary_and_step_vs_position():
    rec = StreamRecord(SR, FPS, K, frame_times=[0.01 * i + 0.001 * i * i for i in range(40)],
                       arrivals=[0.02, 0.5], chunk_samples=[HOP, 39 * HOP], total_s=0.6)
    m, samples = summarize([RunRecord([rec], 0.6, 0.3)], cores=2)
    assert m["ttfa_p50"] == pytest.approx(0.02) and m["gap_max"] == pytest.approx(0.48)
    assert m["codes_per_audio_s"] == pytest.approx(FPS * K)
    assert m["core_s_per_audio_s"] == pytest.approx(0.6 * 2 / rec.audio_s)
    assert m["cpu_s_per_audio_s"] == pytest.approx(0.3 / rec.audio_s)
    assert len(samples["frame_latency_s"]) == 39
    pos = step_vs_position(rec, prompt_len=10, positions=[15, 40, 500])
    assert pos["step_p50_pos15"] < pos["step_p50_pos40"]  # the steps slow down with position here
    assert pos["step_p50_pos500"] != pos["step_p50_pos500"]  # never reached: nan
