"""Workers: one loaded engine x scenario each, driven run by run from the bench.

`ProcessWorker` keeps its engine in a fresh spawned process, so its peak RSS
(`ru_maxrss`) is that engine's own, and no engine's thread pools or imports
(torch) leak into another's numbers. `LocalWorker` runs in this process
(`--no-isolate`: faster; peak RSS is then the whole process's).

All engines of a scenario are loaded at once and `interleave` times them in
rotation (A B C, B C A, C A B, ...): a machine whose load drifts during the
bench then shifts every engine alike, and the ratios stay fair.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cadenza.engine.errors import CadenzaError

from .measure import RunRecord, step_vs_position
from .runners import make_runner


class BenchWorkerDied(CadenzaError):
    """A benchmark worker process ended without an answer."""


@dataclass
class Job:
    """One engine x scenario (plain data: it crosses into a worker process)."""

    engine: str
    bundle: str
    threads: int
    streams: int
    text: str
    frames: int
    seed: int = 0
    positions: list[int] = field(default_factory=list)  # also time one long stream near these positions
    prompt_len: int = 0
    long_frames: int = 0
    spinning: bool = False  # Cadenza's engine: ONNX Runtime's intra-op threads spin between kernels

    @property
    def tag(self) -> str:
        return f"{self.engine} x{self.streams}"


class LocalWorker:
    """An engine x scenario in this process."""

    def __init__(self, job: Job):
        self.job = job
        t = time.perf_counter()
        self.runner = make_runner(job.engine, job.bundle, job.threads, job.streams, job.spinning)
        self.load_s = time.perf_counter() - t

    def run(self) -> RunRecord:
        j = self.job
        return self.runner.run(j.streams, j.text, j.frames, j.seed)

    def finish(self) -> dict:
        """The long stream (if positions were asked for), then close; returns the process figures."""
        j = self.job
        long = None
        if j.positions:
            print(f"[bench] {j.tag}: one long stream of {j.long_frames} frames (step time vs position)",
                  file=sys.stderr, flush=True)
            rec = self.runner.run(1, j.text, j.long_frames, j.seed).streams[0]
            long = {"metrics": step_vs_position(rec, j.prompt_len, j.positions), "frames": j.long_frames,
                    "frame_latency_s": [round(x, 6) for x in rec.frame_latencies()]}
        cores = min(os.cpu_count() or 1, j.threads + self.runner.helper_threads)
        self.close()
        return {"load_s": self.load_s, "long": long, "cores": cores,
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB -> MiB

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


def _serve(job: Job, conn) -> None:
    """A worker process: load, then answer "run" / "finish" until finished."""
    try:
        worker = LocalWorker(job)
        conn.send(("ok", worker.load_s))
        while conn.recv() == "run":
            conn.send(("ok", worker.run()))
        conn.send(("ok", worker.finish()))
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            conn.send(("error", e))
        except (pickle.PicklingError, TypeError, AttributeError):  # unpicklable: its text still goes back
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))


class ProcessWorker:
    """An engine x scenario in its own spawned process (see the module docstring)."""

    def __init__(self, job: Job):
        ctx = multiprocessing.get_context("spawn")
        self.job = job
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(job, child), name=f"bench-{job.engine}", daemon=True)
        self.proc.start()
        child.close()
        self.load_s = None

    def wait_ready(self) -> None:
        self.load_s = self._answer()

    def _answer(self):
        while not self.conn.poll(0.5):
            if not self.proc.is_alive():
                raise BenchWorkerDied(f"the worker process for {self.job.tag} died (out of memory?); try fewer "
                                      "--streams or --frames, or --no-isolate to see the failure")
        status, value = self.conn.recv()
        if status == "error":
            raise value
        return value

    def run(self) -> RunRecord:
        self.conn.send("run")
        return self._answer()

    def finish(self) -> dict:
        self.conn.send("finish")
        out = self._answer()
        self.proc.join(timeout=30)
        return out

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)


def start_workers(jobs: list[Job], isolate: bool = True) -> list:
    """Load every job's engine (in parallel processes when isolated)."""
    if not isolate:
        return [LocalWorker(j) for j in jobs]
    workers = [ProcessWorker(j) for j in jobs]
    try:
        for w in workers:
            w.wait_ready()
    except BaseException:
        for w in workers:
            w.close()
        raise
    return workers


# PyTorch's OpenMP threads spin for a while after their last parallel region; without a pause the
# engine timed next in the rotation would share its cores with them.
SETTLE_S = 0.5


def interleave(workers: list, runs: int, warmup: int, say: Callable[[str], None]) -> list[dict]:
    """Warm up, then time `runs` rounds with the engines in rotating order; finish and close all.

    Returns, per worker, its `finish()` figures plus `runs`, its timed `RunRecord`s.
    """
    timed: list[list[RunRecord]] = [[] for _ in workers]
    try:
        for i in range(warmup):
            for w in workers:
                w.run()
            say(f"[bench] warm-up {i + 1}/{warmup} done (discarded)")
        for i in range(runs):
            for k in [(i + j) % len(workers) for j in range(len(workers))]:
                if len(workers) > 1:  # let the previous engine's thread pools (OpenMP spin-waits) go idle
                    time.sleep(SETTLE_S)
                r = workers[k].run()
                timed[k].append(r)
                say(f"[bench] {workers[k].job.tag}: run {i + 1}/{runs}: first audio "
                    f"{min(s.ttfa_s for s in r.streams) * 1e3:.1f} ms, {r.agg_x_real_time:.2f}x real time")
        return [{**w.finish(), "runs": t} for w, t in zip(workers, timed)]
    finally:
        for w in workers:
            w.close()
