"""The batched generator on ONNX Runtime: prefill, then per frame the depth steps and one backbone step.

`frame()` samples codebook 0 of every row from its pending logits, runs the
`K - 1` depth steps for the whole batch, and returns each row's frame;
`step()` then feeds the frames back through the backbone for every framed row
at its own position and writes the new K/V in place. A row's numbers never
depend on the other rows: the graphs treat rows independently and each row
samples with its own counter-based draws. Row bookkeeping is the shared
`RowTable`; this class holds only the graphs, caches and batch buffers.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...contract import text
from ...contract.bundle import Bundle
from ...runtime.generator import PrefillItem, Row, RowTable
from ...runtime.kv_cache import CacheShape, KVCache
from ...runtime.sampler import sample_batch
from .graph import OrtGraph


class OrtGenerator:
    """Owns the backbone / depth graphs, their KV caches and the batch buffers (a `BatchGenerator`)."""

    kv_itemsize = 4  # float32 caches

    def __init__(self, bundle: Bundle, slots: int, max_len: int, threads: int | None = None,
                 spinning: bool = False):
        c = bundle.constants
        self.n_codebooks, self.eos = c.n_codebooks, c.eos_id
        self.rows = RowTable(slots, max_len)
        dims = {"batch": slots, "prompt_len": max_len, "cache_len": max_len, "depth_len": max(c.n_codebooks - 1, 1)}
        self.prefill_g = OrtGraph(bundle, "backbone_prefill", {**dims, "batch": 1}, threads, spinning)
        self.step_g = OrtGraph(bundle, "backbone_step", dims, threads, spinning)
        self.depth_g = OrtGraph(bundle, "depth_step", dims, threads, spinning) if c.n_codebooks > 1 else None
        self.kv = KVCache(CacheShape(c.backbone_layers, c.kv_heads, c.head_dim, max_len), slots)
        self.depth_kv = (KVCache(CacheShape(c.depth_layers, c.depth_kv_heads, c.depth_head_dim, c.n_codebooks - 1),
                                 slots) if self.depth_g is not None else None)
        S = slots
        self.logits = np.zeros((S, c.codebook_size + 1), np.float32)  # pending codebook-0 logits per row
        self.hidden = np.zeros((S, c.backbone_dim), np.float32)
        self.codes = np.zeros((S, c.n_codebooks), np.int64)  # the frame each row feeds back
        self.positions = np.zeros(S, np.int64)
        self.prev = np.zeros(S, np.int64)
        self.depth_pos = np.zeros(1, np.int64)

    # --- rows -------------------------------------------------------------
    def add(self, row: Row) -> None:
        self.rows.add(row)

    def remove(self, row: Row) -> None:
        """Free `row`'s slot at once; the last row's state moves into it."""
        moved = self.rows.remove(row)
        if moved is not None:
            self.kv.move(moved.src, moved.dst, moved.row.position)
            for buf in (self.logits, self.hidden, self.codes):  # positions / prev are rebuilt per call
                buf[moved.dst] = buf[moved.src]

    # --- prompts ------------------------------------------------------------
    def prefill(self, items: Sequence[PrefillItem]) -> None:
        """Prefill several rows in one call, each after its own `position` cached entries (its voice
        prefix); rows are padded to the longest prompt.

        Only the valid cached positions are passed (a small copy; prefill is outside the decode
        loop), so a prompt attends to its own prefix rather than to a whole masked slot.
        """
        n, P = len(items), max(len(it.tokens) for it in items)
        starts = [it.row.position for it in items]
        for it, st in zip(items, starts):
            self.rows.check_fits(st, len(it.tokens))
        tok = np.full((n, P), text.PAD, np.int64)  # [n, P]
        for i, it in enumerate(items):
            tok[i, :len(it.tokens)] = it.tokens
        feeds = {"tokens": tok, "voice": np.stack([np.asarray(it.voice, np.float32).reshape(-1) for it in items]),
                 "lengths": np.array([len(it.tokens) for it in items], np.int64), "start": np.array(starts, np.int64)}
        slots = [self.rows.index(it.row) for it in items]
        feeds.update(self._kv_feeds(self.prefill_g, self._gather_past(slots, starts)))
        out = self.prefill_g.run(feeds)
        new = self._stack_new(self.prefill_g, out)  # [L, 2, n, Hkv, P, Dh]
        for i, (it, b, st) in enumerate(zip(items, slots, starts)):
            self.kv.write_prefix(new[:, :, i:i + 1], b, st, len(it.tokens))
            self.logits[b], self.hidden[b] = out["logits"][i], out["hidden"][i]
            it.row.position = st + len(it.tokens)

    def _gather_past(self, slots: list[int], starts: list[int]) -> list[np.ndarray]:
        """Per layer key / value [n, Hkv, max(starts), Dh] holding each row's valid prefix."""
        shape = self.kv.shape
        past = [np.zeros((len(slots), shape.kv_heads, max(starts), shape.head_dim), np.float32)
                for _ in range(2 * shape.layers)]
        for i, (b, st) in enumerate(zip(slots, starts)):
            for a, v in zip(past, self.kv.slot_views(b)):
                a[i, :, :st] = v[0, :, :st]
        return past

    def load_prefix(self, row: Row, kv: np.ndarray) -> None:
        """Copy cached prefix entries kv [L, 2, Hkv, n, Dh] into `row`'s slot."""
        self.rows.check_fits(0, kv.shape[3], "the voice prefix")
        self.kv.copy_prefix(kv, self.rows.index(row), kv.shape[3])
        row.position = kv.shape[3]

    def read_prefix(self, row: Row) -> np.ndarray:
        """A copy of `row`'s valid entries: [L, 2, Hkv, n, Dh]."""
        return self.kv.read_prefix(self.rows.index(row), row.position)

    def feed_frames(self, row: Row, codes: np.ndarray) -> None:
        """Append frames codes [K, F] to `row` through the step graph (an acoustic prompt)."""
        b = self.rows.index(row)
        views = self.kv.slot_views(b)
        pos = np.zeros(1, np.int64)
        for f in range(codes.shape[1]):
            self.rows.check_fits(row.position, 1, "the voice prompt")
            pos[0] = row.position
            feeds = {"codes": np.ascontiguousarray(codes[None, :, f]), "positions": pos}
            feeds.update(self._kv_feeds(self.step_g, views))
            out = self.step_g.run(feeds)
            self.kv.write_prefix(self._stack_new(self.step_g, out), b, row.position, 1)
            row.position += 1

    # --- one frame ------------------------------------------------------------
    def frame(self) -> list[np.ndarray | None]:
        """Sample one frame for every row: [K] codes (caller-owned), or None for end of speech."""
        B = self.rows.begin_frame()
        if not B:
            return []
        samplers = [row.sampler for row in self.rows]
        logits = self.logits[:B].copy()
        logits[self.rows.eos_ban(B), self.eos] = -np.inf  # end of speech refused before the minimum
        c0 = sample_batch(logits, samplers, 0)
        eos = c0 == self.eos
        self.prev[:B] = self.codes[:B, 0] = np.where(eos, 0, c0)
        if self.depth_g is not None:
            self._depth(B, samplers)
        return self.rows.finish_frame([None if e else self.codes[b].copy() for b, e in enumerate(eos)])

    def _depth(self, B: int, samplers) -> None:
        hidden, prev = self.hidden[:B], self.prev[:B]
        views = self.depth_kv.views(B)
        for p in range(self.n_codebooks - 1):
            self.depth_pos[0] = p
            feeds = {"hidden": hidden, "prev_code": prev, "depth_pos": self.depth_pos}
            feeds.update(self._kv_feeds(self.depth_g, views))
            out = self.depth_g.run(feeds)
            for (l, kv), name in zip(self._kv_index(self.depth_g), self._new_names(self.depth_g)):
                self.depth_kv.data[l, kv, :B, :, p, :] = out[name][:, :, 0, :]
            self.codes[:B, p + 1] = self.prev[:B] = sample_batch(out["logits"], samplers, p + 1)

    def step(self) -> None:
        """Feed every framed row's frame through the backbone at its own position."""
        B = self.rows.step_batch()
        if B:
            for b, row in enumerate(self.rows.rows[:B]):
                self.positions[b] = row.position
            feeds = {"codes": self.codes[:B], "positions": self.positions[:B]}
            feeds.update(self._kv_feeds(self.step_g, self.kv.views(B)))
            out = self.step_g.run(feeds)
            self.kv.write_rows([out[n] for n in self._new_names(self.step_g)], B, self.positions[:B])
            self.logits[:B], self.hidden[:B] = out["logits"], out["hidden"]
        self.rows.end_step()

    # --- manifest plumbing (names come from the manifest only) -------------
    @staticmethod
    def _kv_index(g: OrtGraph) -> list[tuple[int, int]]:
        return [(l, kv) for l in range(g.kv_layers) for kv in (0, 1)]

    @staticmethod
    def _new_names(g: OrtGraph) -> list[str]:
        return [n for l in range(g.kv_layers) for n in (g.kv["new_key"] % l, g.kv["new_value"] % l)]

    @staticmethod
    def _kv_feeds(g: OrtGraph, views: list[np.ndarray]) -> dict:
        names = [n for l in range(g.kv_layers) for n in (g.kv["past_key"] % l, g.kv["past_value"] % l)]
        return dict(zip(names, views))

    def _stack_new(self, g: OrtGraph, out) -> np.ndarray:
        """Prefill outputs -> [L, 2, 1, Hkv, P, Dh] (one copy, outside the decode loop)."""
        names = self._new_names(g)
        return np.stack([np.stack([out[names[2 * l]], out[names[2 * l + 1]]]) for l in range(g.kv_layers)])

    def close(self) -> None:
        for g in (self.prefill_g, self.step_g, self.depth_g):
            if g is not None:
                g.close()
