"""Cancellation: leaving a stream early frees its KV slot at once and leaves no trace.

Every way of leaving is covered: `break`, dropping the iterator, `close()` from
another thread, `with`, and cancelling a stream still in the wait queue. What
runs next on the engine must be bit-identical (codes and PCM) to a fresh
engine's output, so a cancelled stream can leak nothing (KV entries, codec
state, sampler state) into later streams.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cadenza.engine import ChunkSchedule
from cadenza.engine.errors import EngineClosed, StreamCancelled
from support import collect, read, wait_for

FIXED = ChunkSchedule(first=2, growth=1, max_frames=4)  # chunking independent of timing: PCM comparable bitwise
LONG = dict(frames=400, greedy=True)  # ~1 s of generation on the tiny model: still running when cancelled


def _next_streams(e):
    """One greedy and one seeded stream, read to the end: (codes, pcm) of each."""
    g = read(e.stream("After the cancel.", greedy=True))
    s = read(e.stream("After the cancel, seeded.", seed=99, temperature=0.9, top_k=20, top_p=0.9,
                      repetition_penalty=1.2))
    return [(g.codes, g.pcm), (s.codes, s.pcm)]


def _assert_same_as_fresh(e, make_engine):
    got = _next_streams(e)
    want = _next_streams(make_engine(chunk=FIXED, max_streams=2))
    for (codes, pcm), (wcodes, wpcm) in zip(got, want):
        np.testing.assert_array_equal(codes, wcodes)
        np.testing.assert_array_equal(pcm, wpcm)


def test_break_frees_the_slot_at_once(make_engine):
    e = make_engine(chunk=FIXED, max_streams=2)
    s = e.stream("Cancel me soon.", **LONG)
    for chunk in s:
        assert chunk.frames == (0, 2)
        break
    assert e.active_streams == 0  # Stream.close (run by the generator's finally) waited for the slot
    assert s.codes.shape[1] < 400
    assert list(s) == []  # a closed stream yields nothing more
    _assert_same_as_fresh(e, make_engine)


def test_dropping_the_iterator_cancels(make_engine):
    e = make_engine(chunk=FIXED, max_streams=2)
    s = e.stream("Cancel me soon.", **LONG)
    it = iter(s)
    next(it)
    del it  # CPython finalises the generator at once: its finally closes the stream
    assert e.active_streams == 0
    assert s.codes.shape[1] < 400
    _assert_same_as_fresh(e, make_engine)


def test_with_block_cancels(make_engine):
    e = make_engine(chunk=FIXED, max_streams=2)
    with e.stream("Cancel me soon.", **LONG) as s:
        next(iter(s))
    assert e.active_streams == 0
    assert s.codes.shape[1] < 400


def test_close_from_another_thread(make_engine):
    e = make_engine(chunk=FIXED, max_streams=2)
    s = e.stream("Cancel me from elsewhere.", **LONG)
    first = threading.Event()
    closed = {}

    def closer():
        first.wait(10)
        t0 = time.perf_counter()
        s.close()
        closed["seconds"] = time.perf_counter() - t0
        closed["active"] = e.active_streams

    t = threading.Thread(target=closer, daemon=True)
    t.start()
    res = collect(s, timeout=30, on_chunk=lambda c: first.set())
    t.join(10)
    assert not t.is_alive()
    assert res.error is None or isinstance(res.error, StreamCancelled), repr(res.error)
    assert closed["active"] == 0  # close() returned only once the slot was free
    assert closed["seconds"] < 5
    assert sum(c.frames[1] - c.frames[0] for c in res.chunks) < 400
    _assert_same_as_fresh(e, make_engine)


def test_cancel_while_waiting_for_a_slot(make_engine):
    e = make_engine(chunk=FIXED, max_streams=1)
    alone = read(e.stream("The running one.", frames=200, greedy=True)).codes
    a = e.stream("The running one.", frames=200, greedy=True)
    assert wait_for(lambda: e.active_streams == 1)
    b = e.stream("The waiting one.", greedy=True)
    assert list(e.scheduler.waiting) == [b._st]
    blocked = {}

    def reader():  # a reader blocked on the waiting stream is woken with StreamCancelled
        try:
            blocked["chunks"] = list(b)
        except StreamCancelled as err:
            blocked["error"] = err

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    b.close()
    assert time.perf_counter() - t0 < 2
    t.join(10)
    assert not t.is_alive()
    assert "error" in blocked or blocked.get("chunks") == []
    assert len(e.scheduler.waiting) == 0
    assert b.codes.shape[1] == 0
    res = read(a)  # the running stream is untouched
    np.testing.assert_array_equal(res.codes, alone)
    assert e.active_streams == 0


def test_cancel_waiting_stream_beside_same_text(make_engine):
    e = make_engine(chunk=FIXED, max_streams=1)
    a = e.stream("The running one.", **LONG)
    assert wait_for(lambda: e.active_streams == 1)
    b = e.stream("Same text.", greedy=True)
    c = e.stream("Same text.", greedy=True)
    try:
        c.close()  # regression: value-equality of requests once raised ValueError here (numpy fields)
        assert list(e.scheduler.waiting) == [b._st]
        b.close()
        assert len(e.scheduler.waiting) == 0
    finally:
        a._st.cancelled.set()  # let the engine drain even when close() raised


def test_closing_a_finished_stream_is_a_noop(engine):
    s = engine.stream("Done already.", frames=3, greedy=True)
    res = read(s)
    s.close()
    assert list(s) == [] and len(res.chunks) >= 1
    np.testing.assert_array_equal(s.codes, res.codes)
    assert engine.active_streams == 0


def test_engine_close_ends_running_and_waiting_streams(make_engine):
    e = make_engine(chunk=FIXED, max_streams=1)
    a = e.stream("Running when the engine closes.", **LONG)
    assert wait_for(lambda: e.active_streams == 1)
    b = e.stream("Waiting when the engine closes.", greedy=True)
    e.close()
    ra, rb = collect(a, timeout=10), collect(b, timeout=10)
    assert isinstance(rb.error, EngineClosed), repr(rb.error)
    # the running one either finished its frames first or was ended by the close
    assert isinstance(ra.error, EngineClosed) or ra.stream.codes.shape[1] == 400, repr(ra.error)
    with pytest.raises(EngineClosed):
        e.stream("After close.")


def test_a_failed_stream_frees_its_slot_at_once(make_engine):
    e = make_engine(chunk=FIXED, max_streams=2)
    decode = e.worker.decoder.decode
    calls = []

    def failing(jobs):  # the second decoder call fails (e.g. an ONNX Runtime error)
        calls.append(len(jobs))
        if len(calls) == 2:
            raise RuntimeError("codec decoder failed")
        return decode(jobs)

    e.worker.decoder.decode = failing
    s = e.stream("The codec fails under me.", frames=200, greedy=True)
    res = collect(s, timeout=30)
    assert isinstance(res.error, RuntimeError) and "codec decoder failed" in str(res.error)
    assert e.active_streams == 0
    assert s.codes.shape[1] < 200, "the failed stream was generated to its end"
