"""Workers: engines timed in rotation, closed on every path, errors carried out of the process."""
from __future__ import annotations

import pytest

from cadenza.benchmarks.measure import RunRecord, StreamRecord
from cadenza.benchmarks.workers import Job, interleave, start_workers


class FakeWorker:
    def __init__(self, name: str, log: list, fail_on: int | None = None):
        self.job = Job(name, "b", 1, 1, "hi", 1)
        self.log, self.fail_on, self.closed, self.calls = log, fail_on, False, 0

    def run(self) -> RunRecord:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError(f"{self.job.engine} broke")
        self.log.append(self.job.engine)
        return RunRecord([StreamRecord(24_000, 12.5, 4, [0.01], [0.02], [1920], 0.03)], 1.0, 0.5)

    def finish(self) -> dict:
        self.closed = True
        return {"peak_rss": 1.0}

    def close(self) -> None:
        self.closed = True


def test_runs_rotate_and_warmups_are_discarded():
    log: list = []
    workers = [FakeWorker(n, log) for n in "abc"]
    out = interleave(workers, runs=3, warmup=1, say=lambda s: None)
    assert log == list("abc" + "abc" + "bca" + "cab")  # warm-up, then rotating rounds
    assert [len(o["runs"]) for o in out] == [3, 3, 3] and all(w.closed for w in workers)


def test_a_failing_engine_closes_every_worker():
    log: list = []
    workers = [FakeWorker("a", log), FakeWorker("b", log, fail_on=2)]
    with pytest.raises(RuntimeError, match="b broke"):
        interleave(workers, runs=2, warmup=0, say=lambda s: None)
    assert all(w.closed for w in workers)


def test_a_worker_process_reports_its_error(tiny_bundle):
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        start_workers([Job("nope", str(tiny_bundle), 1, 1, "hi", 1)], isolate=True)
