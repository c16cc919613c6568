"""Continuous batching: one loop thread steps every active stream together.

Streams wait in a bounded FIFO queue, join between steps (after their own
prefill, interleaved with decode steps so a new stream reaches its first audio
quickly, however long the others run) and leave on end-of-speech, error or
cancellation, freeing their slot at once. Admission beyond the slots and the
queue, or a wait past `queue_timeout`, is a typed `EngineBusy` error.
"""
from __future__ import annotations

import collections
import threading
import time

import numpy as np

from .codec_stream import CodecWorker, DecodeJob
from .errors import EngineBusy, EngineClosed, StreamCancelled
from .generator import Generator
from .prefix_cache import PrefixCache
from .stream import Chunk, Request, end_marker


class Scheduler:
    # A new stream's first chunk is decoded before the next decode step starts: the step would
    # otherwise take both cores from the codec worker and delay that stream's first audio.
    FIRST_CHUNK_WAIT_S = 0.5

    def __init__(self, gen: Generator, worker: CodecWorker, sample_rate: int, hop: int,
                 max_queue: int = 64, queue_timeout: float = 30.0, prefix_cache: PrefixCache | None = None,
                 prefill_budget: int = 512):
        self.gen, self.worker = gen, worker
        self.prefill_budget = prefill_budget
        self.prefixes = prefix_cache
        self.sample_rate, self.hop = sample_rate, hop
        self.max_queue, self.queue_timeout = max_queue, queue_timeout
        self.waiting: collections.deque[Request] = collections.deque()
        self.cond = threading.Condition()
        self.closed = False
        self.steps = 0
        self.thread = threading.Thread(target=self._loop, name="cadenza-scheduler", daemon=True)
        self.thread.start()

    # --- called from any thread -------------------------------------------
    def submit(self, req: Request) -> None:
        with self.cond:
            if self.closed:
                raise EngineClosed("the engine is closed; load it again")
            free = self.gen.slots - self.gen.batch
            if len(self.waiting) - free >= self.max_queue:
                raise EngineBusy(f"{len(self.waiting)} streams already wait for a slot (max_queue={self.max_queue}) "
                                 f"beside {self.gen.slots} running; raise max_streams or max_queue")
            req.submitted = time.perf_counter()
            self.waiting.append(req)
            self.cond.notify_all()

    def cancel(self, req: Request) -> None:
        req.cancelled.set()
        with self.cond:
            if req in self.waiting:
                self.waiting.remove(req)
                self._finish(req, StreamCancelled("cancelled while waiting for a slot"))
            self.cond.notify_all()
        req.out.put(end_marker())  # wake a reader blocked on this stream

    @property
    def active(self) -> int:
        return self.gen.batch

    def close(self) -> None:
        with self.cond:
            self.closed = True
            pending = list(self.waiting)
            self.waiting.clear()
            self.cond.notify_all()
        for req in pending:
            self._finish(req, EngineClosed("the engine closed before this stream started"))
        self.thread.join()  # the loop ends after its current step; only then may the generator close

    # --- the loop -----------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.closed and not self.waiting and not self.gen.batch:
                    self.cond.wait()
                if self.closed:
                    break
                admitted = self._take_admissible()
            try:
                self._start(admitted)
                self._drop_cancelled()
                if self.gen.batch:
                    self._iteration()
            except Exception as e:  # never let the loop die: fail the running streams, keep serving
                self._fail_all(e)
        for row in list(self.gen.rows):
            self._finish(row.owner, EngineClosed("the engine closed while this stream ran"))
        self.gen.rows.clear()

    def _take_admissible(self) -> list[Request]:
        """FIFO, while slots are free, within the prefill budget when streams are running.

        The budget (prompt tokens prefilled between two decode steps) keeps a burst of new
        streams from stalling the running ones; at least one stream is always admitted.
        """
        now, out, tokens = time.perf_counter(), [], 0
        while self.waiting and self.gen.batch + len(out) < self.gen.slots:
            cost = self.waiting[0].prefill_tokens
            if out and self.gen.batch and tokens + cost > self.prefill_budget:
                break
            tokens += cost
            out.append(self.waiting.popleft())
        for req in [r for r in self.waiting if now - r.submitted > self.queue_timeout]:
            self.waiting.remove(req)
            self._finish(req, EngineBusy(
                f"waited {self.queue_timeout:.1f} s for a stream slot ({self.gen.slots} in use); "
                "raise max_streams or queue_timeout"))
        return out

    def _start(self, admitted: list[Request]) -> None:
        """Give each request a slot and its voice prefix, then prefill all their texts in one call."""
        ready = []
        for req in admitted:
            if req.cancelled.is_set():
                self._finish(req, StreamCancelled("cancelled before it started"))
                continue
            b = self.gen.add(req.row)
            req.row.owner = req
            try:
                req.begin_segment(0)
                self._load_prefix(b, req)
                ready.append(req)
            except Exception as e:
                self.gen.remove(b)  # the newest row: nothing moves
                self._finish(req, e)
        if not ready:
            return
        try:
            self.gen.prefill_many([(self.gen.index(r.row), r.segments[0], r.voice) for r in ready])
        except Exception as e:
            for r in ready:
                self.gen.remove(self.gen.index(r.row))
                self._finish(r, e)

    def _load_prefix(self, b: int, req: Request) -> None:
        """The voice prefix into row `b`: copied from the cache, or computed (and cached)."""
        p = req.prefix
        kv = self.prefixes.get(p.key) if self.prefixes is not None else None
        if kv is not None:
            self.gen.load_prefix(b, kv)
            return
        self.gen.prefill(b, list(p.tokens), req.voice)
        if p.codes is not None:
            self.gen.feed_frames(b, p.codes)
        if self.prefixes is not None:
            self.prefixes.put(p.key, self.gen.read_prefix(b))

    def _drop_cancelled(self) -> None:
        for b in range(self.gen.batch - 1, -1, -1):
            req = self.gen.rows[b].owner
            if req.cancelled.is_set():
                self.gen.remove(b)
                self._finish(req, None)

    def _iteration(self) -> None:
        try:
            frames = self.gen.frame()
        except Exception as e:
            return self._fail_all(e)
        leaving, reprefill, firsts = [], [], []
        for b, (row, frame) in enumerate(zip(self.gen.rows, frames)):
            req: Request = row.owner
            if frame is not None:
                req.pending.append(frame)
                req.codes.append(frame)
                req.metrics.on_frame()
            if frame is None or row.frames >= row.max_frames:
                if req.segment + 1 < len(req.segments):
                    reprefill.append(req)
                else:
                    leaving.append(b)
            first = self._maybe_flush(req, last=b in leaving)
            if first is not None:
                firsts.append(first)
        for b in reversed(leaving):
            req = self.gen.rows[b].owner
            self.gen.remove(b)
            self._finish(req, None)
        if firsts:  # while the codec decodes first chunks, admit and prefill the streams that arrived
            with self.cond:
                admitted = self._take_admissible()
            self._start(admitted)
        for event in firsts:  # time-to-first-audio: let the codec have the cores for a first chunk
            event.wait(self.FIRST_CHUNK_WAIT_S)
        try:
            self.gen.step()
        except Exception as e:
            return self._fail_all(e)
        self.steps += 1
        for req in reprefill:  # looked up again: leaving rows moved others
            self._next_segment(self.gen.index(req.row))

    def _next_segment(self, b: int) -> None:
        req: Request = self.gen.rows[b].owner
        try:
            req.begin_segment(req.segment + 1)
            self._load_prefix(b, req)
            self.gen.prefill_many([(b, req.segments[req.segment], req.voice)])
        except Exception as e:
            self.gen.remove(b)
            self._finish(req, e)

    def _maybe_flush(self, req: Request, last: bool) -> threading.Event | None:
        """Hand the pending frames to the codec worker if a chunk is due; returns an event set
        when a stream's *first* chunk has been delivered (None otherwise)."""
        if not (last or req.chunk_due()):
            return None
        n = len(req.pending)
        start = req.frames_sent
        codes = np.stack(req.pending, axis=1) if n else np.zeros((self.gen.K, 0), np.int64)  # [K, F]
        req.pending.clear()
        req.frames_sent += n
        index = req.chunks_sent
        req.chunks_sent += 1 if n else 0
        req.chunk_size = req.schedule.next(req.chunk_size or req.schedule.first, self._ahead(req))
        first = threading.Event() if start == 0 and n else None
        self.worker.submit(DecodeJob(codes, req.codec_state, self._deliver(req, start, n, last, index, first),
                                     self._deadline(req, start)))
        return first

    def _deadline(self, req: Request, start_frame: int) -> float:
        """When the audio before `start_frame` will have played (first chunk: now)."""
        m = req.metrics
        if not m.arrivals:
            return time.perf_counter()
        return m.t_start + m.arrivals[0] + start_frame * self.hop / self.sample_rate

    def _ahead(self, req: Request) -> bool:
        """Is the stream's generated audio ahead of real time (by at least one chunk)?"""
        m = req.metrics
        if not m.arrivals:
            return True
        played = time.perf_counter() - m.t_start - m.arrivals[0]
        return req.frames_sent * self.hop / self.sample_rate > played + req.chunk_size * self.hop / self.sample_rate

    def _deliver(self, req: Request, start: int, n: int, last: bool, index: int, done: threading.Event | None):
        def deliver(pcm):
            try:
                if isinstance(pcm, BaseException):
                    req.out.put(pcm)
                    return
                if n:
                    req.out.put(Chunk(pcm, self.sample_rate, (start, start + n), index))
                if last:
                    req.out.put(end_marker())
            finally:
                if done is not None:
                    done.set()

        return deliver

    def _finish(self, req: Request, error: BaseException | None) -> None:
        """Mark a request done and its slot free (error None: a normal end or a cancel)."""
        req.done = True
        if error is not None:
            req.out.put(error)
        req.released.set()

    def _fail_all(self, error: BaseException) -> None:
        for b in range(self.gen.batch - 1, -1, -1):
            req = self.gen.rows[b].owner
            self.gen.remove(b)
            self._finish(req, error)
