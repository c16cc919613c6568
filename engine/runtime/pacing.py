"""Chunk pacing: how many frames each chunk of a stream holds, and when each is due.

The first chunk is small (time-to-first-audio); later chunks grow while the
stream's audio stays ahead of real-time playback. A codec that needs frames of
look-ahead (a windowed, non-causal decoder) makes the first chunk wait for that
many more frames; each later chunk then yields the audio of as many frames as it holds. The pacer keeps its own
clock: playback is taken to start when the codec worker delivers the stream's
first chunk (`on_first_audio`), and the pacer never reads the caller's metrics.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


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


class ChunkPacer:
    """One stream's chunking state (the scheduler thread's; `on_first_audio` comes from the codec thread)."""

    def __init__(self, schedule: ChunkSchedule, frame_seconds: float, lookahead: int = 0):
        self.schedule, self.frame_seconds, self.lookahead = schedule, frame_seconds, lookahead
        self.size = schedule.first  # frames the next chunk waits for
        self.frames_sent = 0  # frames handed to the codec so far
        self.t_first_audio: float | None = None  # perf_counter() when the first chunk was delivered

    def due(self, pending: int) -> bool:
        return pending >= self.size + (self.lookahead if self.frames_sent == 0 else 0)

    def take(self, n: int) -> int:
        """Hand `n` frames to the codec: returns the first of them; sizes the next chunk."""
        start = self.frames_sent
        self.frames_sent += n
        self.size = self.schedule.next(self.size, self.ahead())
        return start

    def on_first_audio(self) -> None:
        if self.t_first_audio is None:
            self.t_first_audio = time.perf_counter()

    def on_resume(self) -> None:
        """The stream is back after waiting for text: if its audio ran dry meanwhile, playback
        restarts now (the clock moves on by the gap) and the next chunk is small again."""
        if self.t_first_audio is None:
            return
        dry = self.t_first_audio + max(0, self.frames_sent - self.lookahead) * self.frame_seconds
        now = time.perf_counter()
        if now > dry:
            self.t_first_audio += now - dry
            self.size = self.schedule.first

    def ahead(self) -> bool:
        """Is the audio handed out ahead of real-time playback by at least one more chunk?"""
        if self.t_first_audio is None:
            return True
        played = time.perf_counter() - self.t_first_audio
        audio = self.frames_sent - self.lookahead
        return audio * self.frame_seconds > played + self.size * self.frame_seconds

    def deadline(self, start_frame: int) -> float:
        """When the audio before generated frame `start_frame` will have played (before any audio: now)."""
        if self.t_first_audio is None:
            return time.perf_counter()
        return self.t_first_audio + max(0, start_frame - self.lookahead) * self.frame_seconds
