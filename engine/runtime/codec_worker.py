"""The codec worker: a thread that decodes chunks beside generation, most urgent first.

Generation fills the frames of chunk N+1 while the worker decodes chunk N
(ONNX Runtime and PyTorch release the GIL, so both cores work). Each stream
carries its own decoder state (conv left context, transposed-conv tails) from
chunk to chunk and from segment to segment, so the stream is seam-free by
construction: concatenated chunks equal one offline decode of the same frames.

The worker hands groups of due chunks to a backend's `CodecDecoder`, which
decodes same-length chunks of several streams in one call.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from ..errors import EngineClosed


@dataclass
class CodecState:
    """One stream's state for a stateful decoder: arrays [1, ...], in the decoder's order."""

    arrays: list[np.ndarray]

    @classmethod
    def zeros(cls, shapes: Sequence[tuple[int, ...]], dtypes: Sequence = ()) -> "CodecState":
        dtypes = list(dtypes) or [np.float32] * len(shapes)
        return cls([np.zeros((1, *shape), dt) for shape, dt in zip(shapes, dtypes)])


@dataclass
class DecodeJob:
    codes: np.ndarray  # [K, F] int64
    state: CodecState
    deliver: Callable[[np.ndarray | BaseException], None]  # receives caller-owned PCM [n * hop]
    deadline: float = 0.0  # time.perf_counter() by which the caller needs it (0: at once)
    final: bool = False  # the stream's last job: a windowed decoder emits what it held back


class CodecDecoder(Protocol):
    """What a backend's codec decoder does for the worker."""

    def new_state(self):
        """A fresh stream's decoder state (opaque to the runtime; updated in place by `decode`)."""

    def decode(self, jobs: list[DecodeJob]) -> list[np.ndarray]:
        """Decode jobs that share one frame count; caller-owned PCM each. A causal decoder returns
        F * hop samples for F frames; a windowed one the frames it can now decode exactly (all of
        them on the `final` job)."""

    def close(self) -> None: ...


class CodecWorker:
    """A thread that decodes `DecodeJob`s, most urgent first, in order within each stream.

    Urgency is the playback deadline the scheduler stamps on each job (a stream's first
    chunk is due at once; a later chunk when the audio before it will have played). Each
    call decodes the most urgent job together with other streams' jobs of the same frame
    count that are due soon after it, within a frame budget, so one large batch never
    holds back a stream that is about to run dry.
    """

    def __init__(self, decoder: CodecDecoder, frame_budget: int = 32, slack_s: float = 0.25):
        self.decoder = decoder
        self.frame_budget, self.slack_s = frame_budget, slack_s
        self.jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self.thread = threading.Thread(target=self._loop, name="cadenza-codec", daemon=True)
        self.thread.start()

    def submit(self, job: DecodeJob) -> None:
        with self._lock:  # nothing is queued behind the closing sentinel: every queued job is decoded
            if self._closed:
                job.deliver(EngineClosed("the codec worker is closed; load the engine again"))
                return
            self.jobs.put(job)

    def close(self) -> None:
        """Decode what is queued, stop the thread, then close the decoder (the worker owns it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.jobs.put(None)
        self.thread.join()
        self.decoder.close()

    def _loop(self) -> None:
        pending: list[DecodeJob] = []
        closing = False
        while pending or not closing:
            if not pending:
                job = self.jobs.get()
                if job is None:
                    return
                pending.append(job)
            while True:  # drain what is due now, to order and batch it
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    continue
                pending.append(job)
            batch = self._pick(pending)
            pending = [j for j in pending if all(j is not b for b in batch)]
            self._decode(batch)

    def _pick(self, pending: list[DecodeJob]) -> list[DecodeJob]:
        """The most urgent job plus same-length jobs of other streams due within the slack."""
        heads: dict[int, DecodeJob] = {}
        for job in pending:  # submission order: the first job of each stream is its next chunk
            heads.setdefault(id(job.state), job)
        order = sorted(heads.values(), key=lambda j: j.deadline)
        first = order[0]
        F = first.codes.shape[1]
        batch = [first]
        for job in order[1:]:
            if job.codes.shape[1] != F or job.deadline > first.deadline + self.slack_s:
                continue
            if (len(batch) + 1) * max(F, 1) > self.frame_budget:
                break
            batch.append(job)
        return batch

    def _decode(self, jobs: list[DecodeJob]) -> None:
        try:
            results = self.decoder.decode(jobs)
        except Exception as e:  # a failed call fails its jobs, never the worker
            for job in jobs:
                job.deliver(e)
            return
        for job, pcm in zip(jobs, results):
            job.deliver(pcm)
