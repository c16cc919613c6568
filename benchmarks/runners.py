"""Runners: one timed run of a scenario on one engine.

A scenario is N streams of the same text and forced length. Cadenza's engine
(`ort`) serves them concurrently: one engine with `max_streams=N`, each stream
started from its own thread at the same moment. The baselines have no
batching, so they serve the N requests one after another (all N arrive at the
start; the later ones wait, and their TTFA includes the wait).
"""
from __future__ import annotations

import threading
import time

from cadenza.engine.runtime.metrics import StreamMetrics

from .baselines import BASELINES, SAMPLING, drive
from .measure import Clock, RunRecord, StreamRecord

ENGINE = "ort"  # Cadenza's engine, compared against every baseline


def measure_engine_stream(engine, text: str, frames: int, seed: int, queue_s: float = 0.0) -> StreamRecord:
    """One stream on a Cadenza `Engine` (or anything with its `stream` / constants), timed from the call.

    Chunk arrivals are stamped here, when the iterator hands the PCM to us, and
    TTFA counts from before `engine.stream(...)` is called; the engine's own
    per-frame stamps are shifted onto the same clock.
    """
    t0 = time.perf_counter()
    stream = engine.stream(text, frames=frames, seed=seed, **SAMPLING)
    m = StreamMetrics(engine.sample_rate, engine.frame_rate, engine.n_codebooks, t_start=t0)
    for chunk in stream:
        m.on_chunk(len(chunk.pcm))
    m.on_end()
    em = getattr(stream, "metrics", None)
    if em is not None:
        shift = em.t_start - t0
        m.frame_times = [t + shift for t in em.frame_times]
    return StreamRecord.from_metrics(m, queue_s)


class CadenzaRunner:
    """Cadenza's engine: N concurrent streams on one engine, from N threads."""

    helper_threads = 1  # the codec worker beside generation

    def __init__(self, bundle: str, threads: int, streams: int, engine=None, spinning: bool = False):
        if engine is None:
            from cadenza.engine import Engine

            engine = Engine.load(bundle, threads=threads, max_streams=streams, spinning=spinning)
        self.engine = engine

    def run(self, n: int, text: str, frames: int, seed: int) -> RunRecord:
        records: list = [None] * n
        clock: list[Clock] = []
        start = threading.Barrier(n, action=lambda: clock.append(Clock()))  # all released together

        def one(i: int) -> None:
            try:
                start.wait()
                queue_s = time.perf_counter() - clock[0].t0
                records[i] = measure_engine_stream(self.engine, text, frames, seed + i, queue_s)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                records[i] = e

        threads = [threading.Thread(target=one, args=(i,), name=f"bench-stream-{i}") for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in records:
            if isinstance(r, BaseException):
                raise r
        wall, cpu = clock[0].stop()
        return RunRecord(records, wall, cpu)

    def close(self) -> None:
        self.engine.close()


class SequentialRunner:
    """A baseline `FrameSource`: N streams one after another."""

    helper_threads = 0

    def __init__(self, source):
        self.source = source

    def run(self, n: int, text: str, frames: int, seed: int) -> RunRecord:
        clock = Clock()
        records = [drive(self.source, text, frames, seed + i, queue_s=time.perf_counter() - clock.t0)
                   for i in range(n)]
        wall, cpu = clock.stop()
        return RunRecord(records, wall, cpu)

    def close(self) -> None:
        self.source.close()


def make_runner(engine: str, bundle: str, threads: int, streams: int, spinning: bool = False):
    """The runner for an engine name: `ort` or one of `BASELINES`."""
    if engine == ENGINE:
        return CadenzaRunner(bundle, threads, streams, spinning=spinning)
    if engine not in BASELINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {[ENGINE, *BASELINES]}")
    return SequentialRunner(BASELINES[engine](bundle, threads))
