"""The codec worker: most urgent chunk first, same-length chunks of other streams batched with it,
a stream's own chunks in order, a failed call failing only its jobs, and a clean close."""
from __future__ import annotations

import threading

import numpy as np

from cadenza.engine.errors import EngineClosed
from cadenza.engine.runtime.codec_worker import CodecState, CodecWorker, DecodeJob


class RecordingDecoder:
    """Records each call's jobs; the first call waits until the test has queued everything."""

    state_shapes = [(1, 1)]

    def __init__(self, fail_on: int | None = None):
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.fail_on = fail_on
        self.closed = False

    def decode(self, jobs):
        if not self.calls:
            self.release.wait(5)
        self.calls.append([j.name for j in jobs])
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("decoder failed")
        return [np.full(j.codes.shape[1], len(self.calls), np.float32) for j in jobs]

    def close(self):
        self.closed = True


def job(name: str, frames: int, deadline: float, state: CodecState, out: dict) -> DecodeJob:
    j = DecodeJob(np.zeros((4, frames), np.int64), state, lambda pcm: out.setdefault(name, pcm), deadline)
    j.name = name
    return j


def test_most_urgent_first_and_same_length_batched():
    dec = RecordingDecoder()
    w = CodecWorker(dec, frame_budget=32, slack_s=0.25)
    out: dict = {}
    a, b, c, d = (CodecState.zeros(dec.state_shapes) for _ in range(4))
    w.submit(job("warm", 1, 0.0, d, out))  # occupies the worker until released
    w.submit(job("late-a", 2, 10.0, a, out))
    w.submit(job("urgent-b", 2, 1.0, b, out))
    w.submit(job("soon-c", 2, 1.1, c, out))  # same length, due within the slack of urgent-b
    w.submit(job("b-second", 4, 0.5, b, out))  # b's next chunk waits behind b's first, whatever its deadline
    dec.release.set()
    w.close()
    assert dec.calls[0] == ["warm"]
    assert dec.calls[1] == ["urgent-b", "soon-c"]  # batched: same frame count, due together
    assert dec.calls.index(["b-second"]) > 1 and ["late-a"] in dec.calls
    assert set(out) == {"warm", "late-a", "urgent-b", "soon-c", "b-second"} and dec.closed


def test_frame_budget_bounds_a_batch():
    dec = RecordingDecoder()
    w = CodecWorker(dec, frame_budget=8, slack_s=1.0)
    out: dict = {}
    w.submit(job("warm", 1, 0.0, CodecState.zeros(dec.state_shapes), out))
    for i in range(4):
        w.submit(job(f"s{i}", 4, 1.0 + i * 0.01, CodecState.zeros(dec.state_shapes), out))
    dec.release.set()
    w.close()
    assert dec.calls[1:] == [["s0", "s1"], ["s2", "s3"]]  # 2 x 4 frames fit the 8-frame budget


def test_a_failed_call_fails_its_jobs_only():
    dec = RecordingDecoder(fail_on=2)
    w = CodecWorker(dec)
    out: dict = {}
    w.submit(job("warm", 1, 0.0, CodecState.zeros(dec.state_shapes), out))
    w.submit(job("doomed", 3, 1.0, CodecState.zeros(dec.state_shapes), out))
    w.submit(job("fine", 2, 2.0, CodecState.zeros(dec.state_shapes), out))
    dec.release.set()
    w.close()
    assert isinstance(out["doomed"], RuntimeError) and isinstance(out["fine"], np.ndarray)


def test_submit_after_close_is_engine_closed():
    dec = RecordingDecoder()
    dec.release.set()
    w = CodecWorker(dec)
    w.close()
    out: dict = {}
    w.submit(job("after", 1, 0.0, CodecState.zeros(dec.state_shapes), out))
    assert isinstance(out["after"], EngineClosed)
