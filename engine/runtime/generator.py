"""The batch-generator contract, and the row table every backend shares.

A backend's generator holds one row per active stream; row `b` lives in KV slot
`b`, and rows are kept compact (when one leaves, the last row moves into its
slot). The scheduler drives any backend through `BatchGenerator`:

    add(row) -> prefill([...]) -> frame() -> step() -> frame() -> step() ... -> remove(row)

- `frame()` samples the next frame of every row from its pending logits and
  returns one entry per row (in `rows` order): the frame's K codes, or None
  where the row chose end of speech.
- `step()` completes that frame: the frame is in the row's KV cache and its
  next logits are pending. A backend may do this work inside `frame()` (the torch
  backend runs a whole frame as one CUDA graph); `step()` must still follow.
- Rows added between `frame()` and `step()` (streams admitted while the codec
  decodes) have no frame yet; they are the last rows, and `step()` skips them.

`RowTable` holds the rules every backend shares: slot accounting, compaction,
which rows a frame covers, the slot-full check, and the per-row frame counts.
Backends keep only their math.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ..errors import KVCacheExhausted
from .sampler import StreamSampler


@dataclass(eq=False)  # rows compare by identity
class Row:
    """Host-side control state of one row (passed in explicitly; the generator owns it)."""

    sampler: StreamSampler
    forced: bool = False  # frames=N: end of speech is never sampled
    position: int = 0  # next cache position to write (= valid length)
    frames: int = 0  # frames generated in the current segment
    min_frames: int = 0  # end of speech refused before this
    max_frames: int = 0  # the segment stops here

    def begin_segment(self, min_frames: int, max_frames: int) -> None:
        """A new text segment: an empty slot (position 0) and fresh frame bounds."""
        self.position, self.frames = 0, 0
        self.min_frames, self.max_frames = min_frames, max_frames

    @property
    def bans_eos(self) -> bool:
        return self.forced or self.frames < self.min_frames

    @property
    def segment_done(self) -> bool:
        return self.frames >= self.max_frames


@dataclass(frozen=True)
class Moved:
    """`RowTable.remove` moved `row` from slot `src` into slot `dst` (the backend moves its state)."""

    row: Row
    src: int
    dst: int
    framed: bool  # the moved row was sampled by the pending frame


@dataclass(frozen=True)
class PrefillItem:
    """Prefill `tokens` into `row` after its `row.position` cached positions (its voice prefix)."""

    row: Row
    tokens: Sequence[int]
    voice: np.ndarray | None = None  # speaker embedding [E], for bundles that take one


class RowTable:
    """The rows of a generator: slots 0..batch-1, compact, and which of them the last frame covered."""

    def __init__(self, slots: int, max_len: int):
        self.slots, self.max_len = slots, max_len
        self.rows: list[Row] = []
        self._framed = 0  # rows[:_framed] were sampled by the last frame(), awaiting step()

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def add(self, row: Row) -> int:
        """Give `row` the next slot (the scheduler admits only while one is free); returns it."""
        if len(self.rows) >= self.slots:
            raise RuntimeError(f"internal: all {self.slots} slots are taken")
        self.rows.append(row)
        return len(self.rows) - 1

    def index(self, row: Row) -> int:
        """The current slot of `row` (rows move when others leave)."""
        for i, r in enumerate(self.rows):
            if r is row:
                return i
        raise KeyError("internal: the row is not in this generator")

    def remove(self, row: Row) -> Moved | None:
        """Free `row`'s slot at once: the last row moves into it (returned, for the backend's state)."""
        b, last = self.index(row), len(self.rows) - 1
        if b < self._framed <= last:
            raise RuntimeError("internal: a framed row left after rows were added behind the frame")
        moved = Moved(self.rows[last], last, b, last < self._framed) if b != last else None
        self.rows[b] = self.rows[last]
        self.rows.pop()
        if b < self._framed:
            self._framed -= 1
        return moved

    def check_fits(self, start: int, n: int, what: str = "prompt") -> None:
        """KVCacheExhausted unless `n` positions after `start` fit one slot."""
        if start + n > self.max_len:
            raise KVCacheExhausted(
                f"{what} needs {start + n} cache positions but a slot holds {self.max_len}; "
                f"raise max_len (Engine.load(..., max_len=...)) or shorten the text")

    # --- one frame -------------------------------------------------------------
    def begin_frame(self) -> int:
        """Mark every row as framed; returns the batch the frame covers."""
        if self._framed:
            raise RuntimeError("internal: frame() again before step()")
        self._framed = len(self.rows)
        return self._framed

    def eos_ban(self, B: int) -> np.ndarray:
        """[B] bool: rows whose end of speech is refused this frame."""
        return np.fromiter((r.bans_eos for r in self.rows[:B]), bool, B)

    def finish_frame(self, codes: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """Count a sampled frame per row (None = end of speech) and advance each row's draws."""
        for row, c in zip(self.rows, codes):
            if c is not None:
                row.frames += 1
            row.sampler.end_frame(c)
        return codes

    def step_batch(self) -> int:
        """The rows the pending step covers (rows added since the frame come after them), each
        checked to have room for one more position."""
        B = self._framed
        if B:
            self.check_fits(max(r.position for r in self.rows[:B]), 1, "the stream")
        return B

    def end_step(self) -> None:
        """The step ran: the framed rows advance one position."""
        for r in self.rows[:self._framed]:
            r.position += 1
        self._framed = 0


class BatchGenerator(Protocol):
    """What the scheduler needs from a backend (see the module docstring)."""

    rows: RowTable
    n_codebooks: int

    def add(self, row: Row) -> None: ...
    def remove(self, row: Row) -> None: ...
    def prefill(self, items: Sequence[PrefillItem]) -> None: ...
    def load_prefix(self, row: Row, kv: np.ndarray) -> None: ...
    def read_prefix(self, row: Row) -> np.ndarray: ...
    def feed_frames(self, row: Row, codes: np.ndarray) -> None: ...
    def frame(self) -> list[np.ndarray | None]: ...
    def step(self) -> None: ...
    def close(self) -> None: ...
