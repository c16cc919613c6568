"""Continuous batching: isolation, admission control, random cancellation, asyncio.

Isolation is the contract: a stream's codes (and audio) never depend on which
other streams share its batch, join or leave during it. Observed on the tiny
bundle: codes and PCM bitwise identical; PCM is asserted within 1e-6 max-abs
in case a future codec batching reorders float sums, codes exactly.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time

import numpy as np
import pytest

from cadenza.engine import ChunkSchedule
from cadenza.engine.contract import text as tok
from cadenza.engine.errors import EngineBusy, StreamCancelled
from support import LONG_TEXT, collect, read, wait_for

TARGET = "The quick brown fox jumps over the lazy dog."
OTHERS = [  # (text, kwargs, start delay in s): they join and leave while the target runs
    ("Hi.", dict(frames=3, greedy=True), 0.0),
    ("Second one here, longer than the target.", dict(frames=90, seed=1), 0.0),
    ("Third, a bit longer text.", dict(frames=40, greedy=True), 0.01),
    ("Fourth!", dict(frames=8, seed=2, top_p=0.8), 0.02),
    ("Fifth text goes here.", dict(greedy=True), 0.04),
    ("Sixth.", dict(frames=25, seed=3, repetition_penalty=1.3), 0.06),
    ("Seventh stream, last.", dict(frames=15, greedy=True), 0.08),
]


def _run_beside_others(e, target_kwargs):
    """The target stream started while 7 others (threads) join and leave; returns (target, others' codes, peak)."""
    results: dict = {}
    peak = [0]
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            peak[0] = max(peak[0], e.active_streams)
            time.sleep(0.0005)

    def other(i):
        text, kwargs, delay = OTHERS[i]
        time.sleep(delay)
        results[i] = read(e.stream(text, **kwargs)).codes

    threads = [threading.Thread(target=other, args=(i,), daemon=True) for i in range(len(OTHERS))]
    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    for t in threads[:2]:
        t.start()
    assert wait_for(lambda: e.active_streams >= 1)
    for t in threads[2:]:
        t.start()
    target = read(e.stream(TARGET, **target_kwargs))
    for t in threads:
        t.join(30)
    stop.set()
    mon.join(5)
    assert len(results) == len(OTHERS)
    return target, [results[i] for i in range(len(OTHERS))], peak[0]


@pytest.mark.parametrize("target_kwargs", [pytest.param(dict(greedy=True), id="greedy"),
                                           pytest.param(dict(seed=5, temperature=0.9, top_k=50), id="seeded")])
def test_stream_is_isolated_from_its_batch(target_kwargs, engine):
    alone = read(engine.stream(TARGET, **target_kwargs))
    others_alone = [read(engine.stream(t, **k)).codes for t, k, _ in OTHERS]
    target, others, peak = _run_beside_others(engine, target_kwargs)
    assert peak >= 3, f"the streams never overlapped (peak batch {peak})"
    np.testing.assert_array_equal(target.codes, alone.codes)
    np.testing.assert_allclose(target.pcm, alone.pcm, rtol=0, atol=1e-6)
    for got, want in zip(others, others_alone):
        np.testing.assert_array_equal(got, want)
    assert engine.active_streams == 0


def test_greedy_batched_equals_reference(engine, reference):
    """Eight greedy streams at once (one batch) each reproduce the eager reference."""
    texts = [f"Member {i}." for i in range(8)]
    streams = [engine.stream(t, greedy=True) for t in texts]
    for t, s in zip(texts, streams):
        np.testing.assert_array_equal(read(s).codes, reference.codes(t))


def test_stress_every_stream_completes_or_is_busy(make_engine):
    e = make_engine(max_streams=8, max_queue=16, queue_timeout=0.1, chunk=ChunkSchedule(first=1, growth=2, max_frames=4))
    n = 200
    go = threading.Event()
    outcome: dict = {}

    def worker(i):
        rng = random.Random(i)
        go.wait()
        if i >= 48:  # a burst of 48 (> 8 slots + 16 queued) at once, then arrivals spread over a second
            time.sleep(rng.uniform(0, 1.0))
        frames = 4 + i % 9
        try:
            s = e.stream(f"Stream number {i}.", frames=frames, seed=i)
        except EngineBusy:
            outcome[i] = ("busy-submit",)
            return
        res = collect(s, timeout=60)
        if res.error is None:
            outcome[i] = ("ok", res.codes, len(res.pcm), frames)
        else:
            outcome[i] = ("busy-wait",) if isinstance(res.error, EngineBusy) else ("error", res.error)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "some streams never ended"
    kinds = [o[0] for o in outcome.values()]
    assert len(outcome) == n
    assert "error" not in kinds, [o for o in outcome.values() if o[0] == "error"][:3]
    assert kinds.count("ok") >= 8 and kinds.count("ok") + kinds.count("busy-submit") + kinds.count("busy-wait") == n
    assert kinds.count("busy-submit") + kinds.count("busy-wait") >= 1, "the stress never filled the queue"
    assert e.active_streams == 0
    assert len(e.scheduler.waiting) == 0
    ok = sorted(i for i, o in outcome.items() if o[0] == "ok")
    for i in ok:
        _, codes, samples, frames = outcome[i]
        assert codes.shape == (4, frames) and samples == frames * e.hop
    for i in random.Random(0).sample(ok, 6):  # the survivors' codes are what they are alone
        np.testing.assert_array_equal(read(e.stream(f"Stream number {i}.", frames=4 + i % 9, seed=i)).codes,
                                      outcome[i][1])


def test_random_cancellations_leave_the_others_untouched(engine):
    rng = random.Random(1)
    specs = [(f"Cancellation round, stream {i}.", dict(greedy=True) if i % 2 else dict(seed=i, top_k=20))
             for i in range(12)]
    alone = [read(engine.stream(t, **k)).codes for t, k in specs]
    cancel = set(rng.sample(range(12), 5))
    results: dict = {}

    def worker(i):
        mine = random.Random(100 + i)
        time.sleep(mine.uniform(0, 0.05))
        text, kwargs = specs[i]
        s = engine.stream(text, **kwargs)
        if i not in cancel:
            results[i] = read(s).codes
            return
        if i % 3 == 0:  # close from a third thread after the first chunk
            first = threading.Event()

            def closer():
                first.wait(10)
                s.close()

            threading.Thread(target=closer, daemon=True).start()
            res = collect(s, timeout=30, on_chunk=lambda c: first.set())
        else:  # break after a random number of chunks
            res = collect(s, timeout=30, stop_after=mine.randint(1, 3))
        assert res.error is None or isinstance(res.error, StreamCancelled)
        results[i] = None

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 12
    for i in range(12):
        if i not in cancel:
            np.testing.assert_array_equal(results[i], alone[i])
    assert wait_for(lambda: engine.active_streams == 0, 5)


def test_queue_timeout_is_engine_busy(make_engine):
    e = make_engine(max_streams=1, queue_timeout=0.1)
    a = e.stream("Holding the only slot.", frames=400, greedy=True)
    assert wait_for(lambda: e.active_streams == 1)
    t0 = time.perf_counter()
    res = collect(e.stream("Waiting too long.", greedy=True), timeout=20)
    assert isinstance(res.error, EngineBusy), repr(res.error)
    assert "queue_timeout" in str(res.error)
    assert 0.1 <= time.perf_counter() - t0 < 10
    a.close()
    assert e.active_streams == 0 and len(e.scheduler.waiting) == 0


def test_full_queue_is_engine_busy_at_submit(make_engine):
    e = make_engine(max_streams=1, max_queue=1)
    a = e.stream("Holding the only slot.", frames=400, greedy=True)
    assert wait_for(lambda: e.active_streams == 1)
    b = e.stream("Waiting in the queue.", frames=2, greedy=True)
    with pytest.raises(EngineBusy, match="max_queue"):
        e.stream("One too many.")
    a.close()
    assert read(b).codes.shape == (4, 2)
    assert e.active_streams == 0 and len(e.scheduler.waiting) == 0


def test_max_queue_zero_still_admits_into_free_slots(make_engine):
    e = make_engine(max_streams=2, max_queue=0)
    assert read(e.stream("A free slot is waiting.", frames=2, greedy=True)).codes.shape == (4, 2)


def _segment_end_iteration(e, reference, text) -> int:
    """The decode iteration at which the first segment of `text` ends (white-box)."""
    seg0 = tok.split_text(text, e.bundle.length.longest_text(e.max_len - 1, e.frame_rate))[0]
    n0 = reference.codes(seg0).shape[1]
    _, cap = e.bundle.length.bounds(seg0, e.frame_rate)
    return n0 if n0 == cap else n0 + 1  # at the cap, or one iteration later by end-of-speech


def test_segment_boundary_while_another_stream_leaves(make_engine, reference):
    e = make_engine(max_len=64, max_streams=2)
    alone = read(e.stream(LONG_TEXT, greedy=True)).codes
    n = _segment_end_iteration(e, reference, LONG_TEXT)
    with e.scheduler.cond:  # both admitted in the same loop pass: rows 0 (short) and 1 (long)
        short = e.stream("Hi.", frames=n, greedy=True)
        long = e.stream(LONG_TEXT, greedy=True)
    r_short = collect(short, timeout=10)
    # ~0.3 s alone; fail fast when the scheduler thread died instead of waiting out the reader's deadline
    assert wait_for(lambda: long._st.released.is_set() or not e.scheduler.thread.is_alive(), 10)
    assert e.scheduler.thread.is_alive(), "the scheduler thread died"
    r_long = collect(long, timeout=10)
    assert r_short.error is None and r_long.error is None
    np.testing.assert_array_equal(r_long.codes, alone)
    assert e.active_streams == 0


def test_multi_segment_streams_in_a_batch(make_engine):
    """Long texts side by side (segment boundaries at different iterations) keep their codes."""
    e = make_engine(max_len=64, max_streams=4)
    texts = [LONG_TEXT, "One. Two, three. Four five six seven. Eight nine ten eleven twelve."]
    alone = [read(e.stream(t, greedy=True)).codes for t in texts]
    streams = [e.stream(t, greedy=True) for t in texts]  # the long one is row 0: it never moves
    for s, want in zip(streams, alone):
        np.testing.assert_array_equal(read(s).codes, want)


# --- asyncio ---------------------------------------------------------------------
async def _apcm(e, text, **kwargs) -> np.ndarray:
    parts = [chunk.pcm async for chunk in e.astream(text, **kwargs)]
    return np.concatenate(parts)


def test_astream(engine):
    want = read(engine.stream("From asyncio.", greedy=True)).pcm
    got = asyncio.run(asyncio.wait_for(_apcm(engine, "From asyncio.", greedy=True), 30))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_astream_concurrent_tasks(engine):
    texts = [f"Concurrent task {i}." for i in range(4)]
    want = [read(engine.stream(t, seed=i)).pcm for i, t in enumerate(texts)]

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(_apcm(engine, t, seed=i) for i, t in enumerate(texts))), 30)

    got = asyncio.run(main())
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
    assert engine.active_streams == 0


def test_cancelling_an_astream_task_frees_its_slot(make_engine):
    e = make_engine(max_streams=2)

    async def main():
        first = asyncio.Event()
        got = []

        async def consume():
            async for chunk in e.astream("Cancelled from asyncio.", frames=400, greedy=True):
                got.append(chunk)
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 10)
        assert e.active_streams == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sum(c.frames[1] - c.frames[0] for c in got)

    frames = asyncio.run(main())
    assert e.active_streams == 0
    assert frames < 400
    assert read(e.stream("Next one.", frames=3, greedy=True)).codes.shape == (4, 3)


def test_breaking_out_of_astream_cancels(make_engine):
    """README: `async for ... astream(...)`: breaking out cancels the stream. The async generator is
    closed by the event loop's finaliser (a loop pass later), so the slot is polled, not checked at once."""
    e = make_engine(max_streams=2)

    async def main():
        async for _ in e.astream("Broken off in asyncio.", frames=400, greedy=True):
            break
        for _ in range(200):
            if e.active_streams == 0:
                return True
            await asyncio.sleep(0.01)
        return False

    assert asyncio.run(main())
    assert e.active_streams == 0
