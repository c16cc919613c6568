"""A stream: the caller's handle on one synthesis, and the scheduler's request behind it.

Iterating a `Stream` yields `Chunk`s as they are decoded. Leaving the
iteration early (break, an exception, garbage collection of the iterator, or
`close()`) cancels the stream, and `close()` returns once its KV slot is free.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from .codec_stream import CodecState
from .errors import StreamCancelled
from .generator import Row
from .metrics import StreamMetrics
from .prefix_cache import Prefix

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


@dataclass
class ChunkSchedule:
    """Frames per chunk: `first` (small, for time-to-first-audio), then growing by
    `growth` up to `max_frames` while the stream stays ahead of real time."""

    first: int = 1
    growth: float = 2.0
    max_frames: int = 8

    def __post_init__(self):
        if not (1 <= self.first <= self.max_frames) or self.growth < 1:
            raise ValueError(f"chunk schedule needs 1 <= first <= max_frames and growth >= 1, got {self}")

    def next(self, prev: int, ahead: bool) -> int:
        return min(self.max_frames, max(prev, int(round(prev * self.growth)))) if ahead else prev


@dataclass(eq=False)  # identity semantics: requests are compared by `is` (and hold numpy arrays)
class Request:
    """Scheduler-side state of one stream (touched by the scheduler and codec threads only)."""

    segments: list[list[int]]  # prompt tokens per segment (after the prefix)
    bounds: list[tuple[int, int]]  # (min_frames, max_frames) per segment
    voice: np.ndarray
    prefix: Prefix
    row: Row
    codec_state: CodecState
    metrics: StreamMetrics
    schedule: ChunkSchedule
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    segment: int = 0
    pending: list[np.ndarray] = field(default_factory=list)
    frames_sent: int = 0
    chunks_sent: int = 0
    chunk_size: int = 0
    codes: list[np.ndarray] = field(default_factory=list)
    submitted: float = 0.0
    done: bool = False

    @property
    def prefill_tokens(self) -> int:
        """Positions the first prefill computes (the prefix may come from the cache)."""
        return self.prefix.length + len(self.segments[0])

    def begin_segment(self, i: int) -> None:
        self.segment = i
        r = self.row
        r.frames, r.position = 0, 0
        r.min_frames, r.max_frames = self.bounds[i]

    def chunk_due(self) -> bool:
        return len(self.pending) >= (self.chunk_size or self.schedule.first)


class Stream:
    """Iterate for `Chunk`s; `metrics`, `codes` and `close()` are available any time."""

    def __init__(self, request: Request, scheduler, sample_rate: int):
        self._req, self._sched = request, scheduler
        self.sample_rate = sample_rate
        self._finished = False

    @property
    def metrics(self) -> StreamMetrics:
        return self._req.metrics

    @property
    def codes(self) -> np.ndarray:
        """All frames generated so far: [K, F] int64."""
        c = self._req.codes
        return np.stack(c, axis=1) if c else np.zeros((self._req.row.sampler.n_codebooks, 0), np.int64)

    def _next(self) -> Chunk | None:
        """The next chunk, or None at the end; raises the stream's error."""
        if self._finished:
            return None
        item = self._req.out.get()
        if item is _END:
            self._finished = True
            self._req.metrics.on_end()
            return None
        if isinstance(item, BaseException):
            self._sched.cancel(self._req)  # a failed stream frees its slot at once (no-op if already freed)
            self._finished = True
            raise item
        self._req.metrics.on_chunk(len(item.pcm))
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
            self._sched.cancel(self._req)
        self._req.released.wait(timeout)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_all(self) -> np.ndarray:
        """Consume the stream; returns the whole waveform (float32)."""
        parts = [c.pcm for c in self]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def end_marker():
    return _END


__all__ = ["Chunk", "ChunkSchedule", "Request", "Stream", "StreamCancelled", "end_marker"]
