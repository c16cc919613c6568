"""The streaming codec decoder, running on a worker thread beside generation.

Generation fills the frames of chunk N+1 while the worker decodes chunk N
(ONNX Runtime releases the GIL, so both cores work). Each stream carries its
own decoder state (conv left context, transposed-conv tails) from chunk to
chunk and from segment to segment, so the stream is seam-free by construction:
concatenated chunks equal one offline decode of the same frames.

The worker batches the chunks that are due across streams: jobs with the same
frame count are decoded in one call, their states gathered into preallocated
staging rows and scattered back after. The PCM of each chunk is copied once
out of the graph's output buffer into an array the caller owns.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .backend import Graph
from .errors import EngineClosed


@dataclass
class CodecState:
    """One stream's decoder state: a list of [1, C, N] arrays in manifest order."""

    arrays: list[np.ndarray]

    @classmethod
    def zeros(cls, graph: Graph) -> "CodecState":
        return cls([np.zeros((1, *s["shape"]), np.float32) for s in graph.state])


@dataclass
class DecodeJob:
    codes: np.ndarray  # [K, F] int64
    state: CodecState
    deliver: Callable[[np.ndarray | BaseException], None]  # receives caller-owned PCM [F * hop]
    deadline: float = 0.0  # time.perf_counter() by which the caller needs it (0: at once)


class BatchDecoder:
    """Decodes groups of same-length jobs in one graph call (staging buffers preallocated)."""

    def __init__(self, graph: Graph, max_batch: int, n_codebooks: int, max_frames: int):
        self.g = graph
        self.K = n_codebooks
        self.max_batch, self.max_frames = max_batch, max_frames
        self.codes = np.zeros(max_batch * n_codebooks * max_frames, np.int64)
        self.staging = [np.zeros((max_batch, *s["shape"]), np.float32) for s in graph.state]

    def decode(self, jobs: list[DecodeJob]) -> list[np.ndarray]:
        """Decode jobs that share one frame count; states are updated in place."""
        if jobs[0].codes.shape[1] == 0:  # an end marker: nothing to decode
            return [np.zeros(0, np.float32) for _ in jobs]
        if jobs[0].codes.shape[1] > self.max_frames:  # longer than the staging rows: one at a time
            return [self._decode_group([j], own=True)[0] for j in jobs]
        out: list[np.ndarray] = []
        for i in range(0, len(jobs), self.max_batch):
            out += self._decode_group(jobs[i:i + self.max_batch])
        return out

    def _decode_group(self, jobs: list[DecodeJob], own: bool = False) -> list[np.ndarray]:
        G, F = len(jobs), jobs[0].codes.shape[1]
        if own:
            codes = np.ascontiguousarray(jobs[0].codes[None])
            states = list(jobs[0].state.arrays)
        else:
            codes = self.codes[: G * self.K * F].reshape(G, self.K, F)
            states = [st[:G] for st in self.staging]
            for g, job in enumerate(jobs):
                codes[g] = job.codes
                for dst, src in zip(states, job.state.arrays):
                    dst[g] = src[0]
        feeds = {self.g.input_names[0]: codes}
        feeds.update({s["input"]: a for s, a in zip(self.g.state, states)})
        out = self.g.run(feeds)
        pcm = out[self.g.output_names[0]]  # [G, F * hop], owned by the graph
        for g, job in enumerate(jobs):
            for arr, s in zip(job.state.arrays, self.g.state):
                arr[0] = out[s["output"]][g]
        return [pcm[g].copy() for g in range(G)]  # caller-owned copies


class CodecWorker:
    """A thread that decodes `DecodeJob`s, most urgent first, in order within each stream.

    Urgency is the playback deadline the scheduler stamps on each job (a stream's first
    chunk is due at once; a later chunk when the audio before it will have played). Each
    call decodes the most urgent job together with other streams' jobs of the same frame
    count that are due soon after it, within a frame budget, so one large batch never
    holds back a stream that is about to run dry.
    """

    def __init__(self, decoder, frame_budget: int = 32, slack_s: float = 0.25):
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
        with self._lock:
            self._closed = True
            self.jobs.put(None)
        self.thread.join()

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
