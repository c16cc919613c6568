"""A stream: the caller's handle on one synthesis (`Stream`), and the scheduler's record of it.

Iterating a `Stream` yields `Chunk`s as they are decoded. Leaving the
iteration early (break, an exception, garbage collection of the iterator, or
`close()`) cancels the stream, and `close()` returns once its KV slot is free.

`StreamState` is the one place a stream's mutable state lives. The scheduler
thread owns it; the caller's thread touches only the thread-safe parts: the
output queue, the cancel / released events, and `metrics`, which observe
(nothing reads them to decide anything).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from .generator import Row
from .metrics import StreamMetrics
from .pacing import ChunkPacer
from .request import Request

_END = object()


@dataclass
class Chunk:
    """One piece of audio. `pcm` is float32 mono in [-1, 1], owned by the caller."""

    pcm: np.ndarray
    sample_rate: int
    frames: tuple[int, int]  # [start, end) frame indices within the stream
    index: int  # 0, 1, 2, ... in the order chunks are handed out

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass(eq=False)  # identity semantics (holds numpy arrays)
class StreamState:
    """Everything that changes while one stream runs."""

    request: Request
    row: Row  # the generator's control state of this stream's row
    codec_state: object  # the backend codec decoder's state for this stream
    pacer: ChunkPacer
    metrics: StreamMetrics
    n_codebooks: int
    out: queue.Queue = field(default_factory=queue.Queue)  # Chunk | error | end marker, to the caller
    cancelled: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)  # its slot is free
    segment: int = 0
    pending: list[np.ndarray] = field(default_factory=list)  # frames not yet handed to the codec
    codes: list[np.ndarray] = field(default_factory=list)  # every frame generated, [K] each
    submitted: float = 0.0
    audio_frames: int = 0  # frames whose audio was handed out (the codec thread's counters)
    chunks: int = 0
    feed: object = None  # incremental text (`text_feed.TextFeed`): segments arrive while the stream runs
    resumed: bool = False  # it left its slot to wait for text and is back: it starts its next segment

    def begin_segment(self, i: int) -> None:
        self.segment = i
        self.row.begin_segment(*(self.request.bounds[i] if self.feed is None else self.feed.bounds(i)))

    def prompt(self, i: int) -> tuple[int, ...]:
        """Segment `i`'s prompt tokens."""
        return self.request.segments[i] if self.feed is None else self.feed.prompt(i)

    @property
    def start_index(self) -> int:
        """The segment the stream starts when it is admitted (0, or the next one after a wait for text)."""
        return self.segment + 1 if self.resumed else 0

    @property
    def prefill_tokens(self) -> int:
        """Positions its admission prefills (the prefix may come from the cache)."""
        return self.request.prefix.length + len(self.prompt(self.start_index))

    def next_segment(self) -> str:
        """After the current segment: "ready" (the next one is known), "end", or "wait" (incremental
        text that has not reached its next segment yet)."""
        if self.feed is not None:
            return self.feed.state(self.segment + 1)
        return "ready" if self.segment + 1 < len(self.request.segments) else "end"

    @property
    def has_next_segment(self) -> bool:
        return self.next_segment() == "ready"

    def finish(self, error: BaseException | None) -> None:
        """Done (error None: a normal end or a cancel): the caller is told, the slot counts as free."""
        if error is not None:
            self.out.put(error)
        if self.feed is not None:
            self.feed.stop()
        self.released.set()

    def wake(self) -> None:
        """Unblock a caller waiting on the queue (after a cancel)."""
        self.out.put(_END)


class Stream:
    """Iterate for `Chunk`s; `metrics`, `codes` and `close()` are available any time."""

    def __init__(self, state: StreamState, scheduler, sample_rate: int):
        self._st, self._sched = state, scheduler
        self.sample_rate = sample_rate
        self._finished = False

    @property
    def metrics(self) -> StreamMetrics:
        return self._st.metrics

    @property
    def codes(self) -> np.ndarray:
        """All frames generated so far: [K, F] int64."""
        c = list(self._st.codes)
        return np.stack(c, axis=1) if c else np.zeros((self._st.n_codebooks, 0), np.int64)

    def _next(self) -> Chunk | None:
        """The next chunk, or None at the end; raises the stream's error."""
        if self._finished:
            return None
        item = self._st.out.get()
        if item is _END:
            self._finished = True
            self._st.metrics.on_end()
            return None
        if isinstance(item, BaseException):
            self._sched.cancel(self._st)  # a failed stream frees its slot at once (no-op if already freed)
            self._finished = True
            raise item
        self._st.metrics.on_chunk(len(item.pcm))
        return item

    def __iter__(self):
        try:
            while (chunk := self._next()) is not None:
                yield chunk
        finally:
            self.close()

    async def __aiter__(self):
        import asyncio

        try:
            while (chunk := await asyncio.to_thread(self._next)) is not None:
                yield chunk
        finally:
            self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel if still running; returns once the stream's slot is free."""
        if not self._finished:
            self._finished = True
            self._sched.cancel(self._st)
        self._st.released.wait(timeout)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_all(self) -> np.ndarray:
        """Consume the stream; returns the whole waveform (float32)."""
        parts = [c.pcm for c in self]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
