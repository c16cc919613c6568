"""Continuous batching: one loop thread steps every active stream together.

Streams wait in a bounded FIFO queue, join between steps (after their own
prefill, interleaved with decode steps so a new stream reaches its first audio
quickly, however long the others run) and leave on end of speech, error or
cancellation, freeing their slot at once. Admission beyond the slots and the
queue, or a wait past `queue_timeout`, is a typed `EngineBusy` error.

The scheduler drives any backend through the `BatchGenerator` contract and
hands due chunks to the `CodecWorker`; each stream's state is its `StreamState`.
"""
from __future__ import annotations

import collections
import threading
import time

import numpy as np

from ..errors import EngineBusy, EngineClosed, StreamCancelled
from .codec_worker import CodecWorker, DecodeJob
from .generator import BatchGenerator, PrefillItem
from .prefix_cache import PrefixCache
from .stream import Chunk, StreamState


class Scheduler:
    # A new stream's first chunk is decoded before the next decode step starts: the step would
    # otherwise take both cores from the codec worker and delay that stream's first audio.
    FIRST_CHUNK_WAIT_S = 0.5

    def __init__(self, gen: BatchGenerator, worker: CodecWorker, sample_rate: int, hop: int, *, max_queue: int = 64,
                 queue_timeout: float = 30.0, prefix_cache: PrefixCache | None = None, prefill_budget: int = 512):
        self.gen, self.worker, self.sample_rate, self.hop = gen, worker, sample_rate, hop
        self.prefill_budget, self.prefixes = prefill_budget, prefix_cache
        self.max_queue, self.queue_timeout = max_queue, queue_timeout
        self.waiting: collections.deque[StreamState] = collections.deque()
        self.running: dict = {}  # Row -> StreamState
        self.parked: set[StreamState] = set()  # incremental text: out of a slot until their next segment
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="cadenza-scheduler", daemon=True)
        self.thread.start()

    # --- called from any thread -------------------------------------------
    def submit(self, st: StreamState) -> None:
        with self.cond:
            if self.closed:
                raise EngineClosed("the engine is closed; load it again")
            rows = self.gen.rows
            if len(self.waiting) - (rows.slots - len(rows)) >= self.max_queue:
                raise EngineBusy(f"{len(self.waiting)} streams already wait for a slot (max_queue={self.max_queue}) "
                                 f"beside {rows.slots} running; raise max_streams or max_queue")
            st.submitted = time.perf_counter()
            self.waiting.append(st)
            self.cond.notify_all()

    def cancel(self, st: StreamState) -> None:
        st.cancelled.set()
        with self.cond:
            if st in self.waiting:
                self.waiting.remove(st)
                st.finish(StreamCancelled("cancelled while waiting for a slot"))
            elif st in self.parked:
                self.parked.discard(st)
                st.finish(StreamCancelled("cancelled while waiting for text"))
            self.cond.notify_all()
        if st.feed is not None:
            st.feed.stop()
        st.wake()

    def resume(self, st: StreamState) -> None:
        """Incremental text: a parked stream's next segment (or its end) has come. It rejoins at the
        front of the queue (it was admitted before) or, at the end of its text, finishes."""
        with self.cond:
            if st not in self.parked:
                return  # still running: it takes the segment when its current one ends
            self.parked.discard(st)
            if self.closed:
                return st.finish(EngineClosed("the engine closed while this stream waited for text"))
            if st.next_segment() == "ready":
                st.resumed, st.submitted = True, time.perf_counter()
                st.metrics.on_text()
                st.pacer.on_resume()
                self.waiting.appendleft(st)
                self.cond.notify_all()
                return
        self._maybe_flush(st, last=True)  # the end of its text: what a windowed codec held back
        st.finish(None)

    @property
    def active(self) -> int:
        return len(self.gen.rows)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            pending = list(self.waiting) + list(self.parked)
            self.waiting.clear()
            self.parked.clear()
            self.cond.notify_all()
        for st in pending:
            st.finish(EngineClosed("the engine closed before this stream started"))
        self.thread.join()  # the loop ends after its current step; only then may the generator close

    # --- the loop -----------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.closed and not self.waiting and not self.running:
                    self.cond.wait()
                if self.closed:
                    break
                admitted = self._take_admissible()
            try:
                self._start(admitted)
                self._drop_cancelled()
                if self.running:
                    self._iteration()
            except Exception as e:  # never let the loop die: fail the running streams, keep serving
                self._fail_all(e)
        for st in list(self.running.values()):
            self._leave(st, EngineClosed("the engine closed while this stream ran"))

    def _take_admissible(self) -> list[StreamState]:
        """FIFO, while slots are free, within the prefill budget when streams are running.

        The budget (prompt tokens prefilled between two decode steps) keeps a burst of new
        streams from stalling the running ones; at least one stream is always admitted.
        """
        now, out, tokens = time.perf_counter(), [], 0
        rows = self.gen.rows
        while self.waiting and len(rows) + len(out) < rows.slots:
            cost = self.waiting[0].prefill_tokens
            if out and self.running and tokens + cost > self.prefill_budget:
                break
            tokens += cost
            out.append(self.waiting.popleft())
        for st in [s for s in self.waiting if now - s.submitted > self.queue_timeout]:
            self.waiting.remove(st)
            st.finish(EngineBusy(f"waited {self.queue_timeout:.1f} s for a stream slot ({rows.slots} in use); "
                                 "raise max_streams or queue_timeout"))
        return out

    def _start(self, admitted: list[StreamState]) -> None:
        """Give each stream a slot and its voice prefix, then prefill all their texts in one call."""
        ready = []
        for st in admitted:
            if st.cancelled.is_set():
                st.finish(StreamCancelled("cancelled before it started"))
                continue
            self.gen.add(st.row)
            self.running[st.row] = st
            try:
                st.begin_segment(st.start_index)
                self._load_prefix(st)
                ready.append(st)
            except Exception as e:
                self._leave(st, e)
        if not ready:
            return
        try:
            self.gen.prefill([PrefillItem(st.row, st.prompt(st.segment), st.request.voice) for st in ready])
        except Exception as e:
            for st in ready:
                self._leave(st, e)

    def _load_prefix(self, st: StreamState) -> None:
        """The voice prefix into the stream's row: copied from the cache, or computed (and cached)."""
        p = st.request.prefix
        if not p.length:  # a voice named in the text prompt: nothing before the segment
            return
        kv = self.prefixes.get(p.key) if self.prefixes is not None else None
        if kv is not None:
            self.gen.load_prefix(st.row, kv)
            return
        if p.tokens:
            self.gen.prefill([PrefillItem(st.row, p.tokens, st.request.voice)])
        if p.codes is not None:
            self.gen.feed_frames(st.row, p.codes)
        if self.prefixes is not None:
            self.prefixes.put(p.key, self.gen.read_prefix(st.row))

    def _drop_cancelled(self) -> None:
        for st in [s for s in self.running.values() if s.cancelled.is_set()]:
            self._leave(st, None)

    def _iteration(self) -> None:
        try:
            frames = self.gen.frame()
        except Exception as e:
            return self._fail_all(e)
        leaving, reprefill, parking, firsts = [], [], [], []
        for row, frame in zip(list(self.gen.rows), frames):
            st = self.running[row]
            if frame is not None:
                st.pending.append(frame)
                st.codes.append(frame)
                st.metrics.on_frame()
            nxt = st.next_segment() if frame is None or row.segment_done else None
            if nxt is not None:
                {"ready": reprefill, "end": leaving, "wait": parking}[nxt].append(st)
            first = self._maybe_flush(st, last=nxt == "end", flush=nxt == "wait")
            if first is not None:
                firsts.append(first)
        for st in leaving:
            self._leave(st, None)
        for st in parking:
            self._park(st, reprefill)
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
        for st in reprefill:
            self._next_segment(st)

    def _next_segment(self, st: StreamState) -> None:
        try:
            st.begin_segment(st.segment + 1)
            self._load_prefix(st)
            self.gen.prefill([PrefillItem(st.row, st.prompt(st.segment), st.request.voice)])
        except Exception as e:
            self._leave(st, e)

    def _park(self, st: StreamState, reprefill: list) -> None:
        """Incremental text whose next segment has not come: the stream leaves its slot (its audio so
        far is flushed) and waits, out of the generator, for `resume`. Checked again under the lock:
        the segment or the end of the text may have come meanwhile."""
        with self.cond:
            nxt = st.next_segment()
            if nxt == "wait":
                self.running.pop(st.row, None)
                self.gen.remove(st.row)
                self.parked.add(st)
                return
        if nxt == "ready":
            reprefill.append(st)
        else:
            self._maybe_flush(st, last=True)
            self._leave(st, None)

    def _maybe_flush(self, st: StreamState, last: bool, flush: bool = False) -> threading.Event | None:
        """Hand the pending frames to the codec worker if a chunk is due (or `flush`: whatever is
        pending); returns an event set when a stream's *first* chunk has been delivered (None otherwise)."""
        if not (last or flush and st.pending or st.pacer.due(len(st.pending))):
            return None
        n = len(st.pending)
        codes = np.stack(st.pending, axis=1) if n else np.zeros((st.n_codebooks, 0), np.int64)  # [K, F]
        st.pending.clear()
        start = st.pacer.take(n)
        first = threading.Event() if start == 0 and n else None
        self.worker.submit(DecodeJob(codes, st.codec_state, self._deliver(st, last, first), st.pacer.deadline(start),
                                     final=last))
        return first

    def _deliver(self, st: StreamState, last: bool, done: threading.Event | None):
        def deliver(pcm):  # runs on the codec worker's thread, in order within the stream
            try:
                if isinstance(pcm, BaseException):
                    st.out.put(pcm)
                    return
                if len(pcm):
                    st.pacer.on_first_audio()
                    n, start = len(pcm) // self.hop, st.audio_frames
                    st.out.put(Chunk(pcm, self.sample_rate, (start, start + n), st.chunks))
                    st.audio_frames, st.chunks = start + n, st.chunks + 1
                if last:
                    st.wake()
            finally:
                if done is not None:
                    done.set()

        return deliver

    def _leave(self, st: StreamState, error: BaseException | None) -> None:
        """The stream's row leaves the generator (if it holds one) and the stream is done."""
        if self.running.pop(st.row, None) is not None:
            self.gen.remove(st.row)
        st.finish(error)

    def _fail_all(self, error: BaseException) -> None:
        for st in list(self.running.values()):
            self._leave(st, error)
