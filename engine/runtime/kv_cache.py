"""The KV cache: one preallocated array, slots x max length, written in place.

Layout `[L, 2, S, Hkv, T, Dh]` (layer-major, then key/value, then slot): the
per-layer graph inputs of a batch over slots `s..s+B-1` are the contiguous views
`cache[l, 0, s:s+B]` / `cache[l, 1, s:s+B]`, so binding them copies nothing (and a
graph that writes its new entries in place writes straight into the cache). Active
streams are kept compact in the first slots: when one leaves, the last active
slot's valid prefix moves into the hole (`move`).

Index arithmetic of a write: row `b` of a step writes its one new entry at
`cache[l, kv, b, :, pos[b], :]` for every layer l and kv; a prefill of `n` tokens at `start` writes
`cache[:, :, slot, :, start:start + n, :]`. Entries at or beyond a row's valid
length are never read (the graphs mask them), so a released slot needs no
clearing and stale data can never leak into another stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import KVCacheExhausted


@dataclass(frozen=True)
class CacheShape:
    layers: int
    kv_heads: int
    head_dim: int
    max_len: int

    def slot_bytes(self, itemsize: int = 4) -> int:
        """Bytes of one slot's keys and values with `itemsize`-byte elements."""
        return self.layers * 2 * self.kv_heads * self.max_len * self.head_dim * itemsize


class KVCache:
    """A slot-managed cache array for one transformer (backbone or depth decoder)."""

    def __init__(self, shape: CacheShape, slots: int, dtype=np.float32):
        if slots < 1:
            raise KVCacheExhausted(f"a KV cache needs at least one slot ({shape.slot_bytes() / 2**20:.1f} MiB each); "
                                   "raise the engine's memory budget or lower max_len")
        self.shape, self.slots = shape, slots
        s = shape
        self.data = np.zeros((s.layers, 2, slots, s.kv_heads, s.max_len, s.head_dim), dtype)
        self._views: dict[int, list[np.ndarray]] = {}  # batch -> views from slot 0

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def views(self, batch: int, start: int = 0) -> list[np.ndarray]:
        """Per-layer [key, value] views over slots start..start+batch-1, interleaved as the graphs take them.
        From slot 0 (a decode step's batch) the same list of the same view objects for the same batch (do
        not modify it): the step graph sees the same arrays from step to step and keeps its binding."""
        if start:
            return self._make_views(batch, start)
        v = self._views.get(batch)
        if v is None:
            v = self._views[batch] = self._make_views(batch, 0)
        return v

    def _make_views(self, batch: int, start: int) -> list[np.ndarray]:
        return [self.data[l, kv, start:start + batch] for l in range(self.shape.layers) for kv in (0, 1)]

    def write_rows(self, new: list[np.ndarray], batch: int, positions: np.ndarray, start: int = 0) -> None:
        """Write one new entry per row: `new` holds per layer the key and value outputs of a step
        ([B, Hkv, 1, Dh] each, interleaved as the graphs return them), row b into slot start + b at
        positions[b] (the caller checked every position is below max_len)."""
        rows = np.arange(start, start + batch)
        for i, arr in enumerate(new):  # advanced indices (rows, positions) -> [B, Hkv, Dh]
            self.data[i // 2, i % 2, rows, :, positions[:batch], :] = arr[:batch, :, 0, :]

    def write_span(self, new: list[np.ndarray], row: int, slot: int, start: int, n: int) -> None:
        """Write row `row` of a call's outputs (per layer key and value [B, Hkv, >=n, Dh], interleaved)
        into `slot` at positions start..start+n."""
        for i, arr in enumerate(new):
            self.data[i // 2, i % 2, slot, :, start:start + n, :] = arr[row, :, :n, :]

    def copy_prefix(self, src: np.ndarray, slot: int, n: int) -> None:
        """Copy a cached prefix src [L, 2, Hkv, n, Dh] into `slot` (voice-prompt prefix cache)."""
        self.data[:, :, slot, :, :n, :] = src

    def read_prefix(self, slot: int, n: int) -> np.ndarray:
        """A copy of the first `n` positions of `slot`: [L, 2, Hkv, n, Dh]."""
        return self.data[:, :, slot, :, :n, :].copy()

    def move(self, src: int, dst: int, n: int) -> None:
        """Move the valid prefix (n positions) of slot `src` into slot `dst`."""
        if src != dst and n > 0:
            self.data[:, :, dst, :, :n, :] = self.data[:, :, src, :, :n, :]
