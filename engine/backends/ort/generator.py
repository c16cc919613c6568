"""The batched generator on ONNX Runtime: prefill, then one frame at a time, for either token layout.

`depth` layout (reference family, CSM): `frame()` samples codebook 0 of every row
from its pending logits, runs the depth decoder for the whole batch (sampling
codebooks 1..K-1), and returns each row's frame; `step()` feeds the frames back
through the backbone for every framed row at its own position.

`flat` layout (Orpheus): a frame is `K` backbone tokens. `frame()` samples token 0,
feeds it through the backbone, samples token 1, ... up to token K-1, each among
the ids its frame position allows; `step()` feeds the last one.

A row's numbers never depend on the other rows: the graphs treat rows
independently and each row samples with its own counter-based draws. Row
bookkeeping is the shared `RowTable`; this class holds the graphs, caches and
batch buffers.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...contract import text
from ...contract.bundle import Bundle
from ...runtime.generator import PrefillItem, Row, RowTable
from ...runtime.kv_cache import CacheShape, KVCache
from ...runtime.sampler import sample_codes
from .graph import OrtGraph


class OrtGenerator:
    """Owns the backbone / depth graphs, their KV caches and the batch buffers (a `BatchGenerator`)."""

    kv_itemsize = 4  # float32 caches

    def __init__(self, bundle: Bundle, slots: int, max_len: int, threads: int | None = None,
                 spinning: bool = False):
        c, self.layout = bundle.constants, bundle.layout
        self.n_codebooks = c.n_codebooks
        self.rows = RowTable(slots, max_len)
        dims = {"batch": slots, "prompt_len": max_len, "cache_len": max_len,
                "depth_len": max(self.layout.depth_positions, 1)}
        self.prefill_g = OrtGraph(bundle, "backbone_prefill", {**dims, "batch": 1}, threads, spinning)
        self.step_g = OrtGraph(bundle, "backbone_step", dims, threads, spinning)
        self.depth_g = OrtGraph(bundle, "depth_step", dims, threads, spinning) if bundle.has("depth_step") else None
        self.kv = KVCache(CacheShape(c.backbone_layers, c.kv_heads, c.head_dim, max_len), slots)
        self.depth_kv = (KVCache(CacheShape(c.depth_layers, c.depth_kv_heads, c.depth_head_dim,
                                            self.layout.depth_positions), slots) if self.depth_g else None)
        S, K = slots, c.n_codebooks
        self.logits = np.zeros((S, self.layout.logits_size), np.float32)  # pending backbone logits per row
        self.hidden = np.zeros((S, c.backbone_dim), np.float32)
        self.codes = np.zeros((S, K), np.int64)  # the frame (codes) each row produced
        self.feed = np.zeros((S, self.step_g.inputs[0]["shape"][1]), np.int64)  # what the step graph takes
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
            for buf in (self.logits, self.hidden, self.codes, self.feed):  # positions / prev are per call
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
        tok = np.full((n, P), text.PAD, np.int64)  # [n, P]; padding is masked by `lengths`
        for i, it in enumerate(items):
            tok[i, :len(it.tokens)] = it.tokens
        feeds = {"tokens": tok, "lengths": np.array([len(it.tokens) for it in items], np.int64),
                 "start": np.array(starts, np.int64)}
        if "voice" in self.prefill_g.input_names:
            feeds["voice"] = np.stack([np.asarray(it.voice, np.float32).reshape(-1) for it in items])
        slots = [self.rows.index(it.row) for it in items]
        feeds.update(self._kv_feeds(self.prefill_g, self._gather_past(slots, starts)))
        out = self.prefill_g.run(feeds)
        new = self._stack_new(self.prefill_g, out)  # [L, 2, n, Hkv, P, Dh]
        for i, (it, b, st) in enumerate(zip(items, slots, starts)):
            self.kv.write_prefix(new[:, :, i:i + 1], b, st, len(it.tokens))
            self._pending(b, out, i)
            it.row.position = st + len(it.tokens)

    def _pending(self, b: int, out: dict, i: int) -> None:
        """Row `b` takes row `i` of a backbone output as its pending logits (and hidden state)."""
        self.logits[b] = out["logits"][i]
        if "hidden" in out:
            self.hidden[b] = out["hidden"][i]

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
        for f in range(codes.shape[1]):
            for feed in self._frame_feeds(codes[:, f]):
                self._step_rows([row], [b], feed[None])

    def _frame_feeds(self, frame: np.ndarray) -> list[np.ndarray]:
        """What the step graph takes for one frame [K]: the K codes, or K token ids (flat)."""
        if self.layout.kind == "flat":
            return [np.array([self.layout.token_id(j, int(c))], np.int64) for j, c in enumerate(frame)]
        return [np.ascontiguousarray(frame, np.int64)]

    # --- one frame ------------------------------------------------------------
    def frame(self) -> list[np.ndarray | None]:
        """Sample one frame for every row: [K] codes (caller-owned), or None for end of speech."""
        B = self.rows.begin_frame()
        if not B:
            return []
        samplers = [row.sampler for row in self.rows]
        ban = self.rows.eos_ban(B)
        ended = self._flat_frame(B, samplers, ban) if self.layout.kind == "flat" else self._depth_frame(B, samplers, ban)
        return self.rows.finish_frame([None if e else self.codes[b].copy() for b, e in enumerate(ended)])

    def _depth_frame(self, B: int, samplers, ban: np.ndarray) -> np.ndarray:
        lay = self.layout
        extra = (lay.eos_column,) if lay.eos == "column" else ()
        self.codes[:B, 0], ended = sample_codes(self.logits[:B], lay.allowed[0], samplers, 0, extra, ~ban)
        if self.depth_g is not None:
            self._depth(B, samplers)
        if lay.eos == "zero_frame":  # end of speech is a frame of K zeros, known only now
            ended = ~ban & (self.codes[:B] == 0).all(axis=1)
        self.feed[:B] = self.codes[:B]
        return ended

    def _depth(self, B: int, samplers) -> None:
        """The depth decoder over the batch: position i feeds codebook i - prime's code (the hidden
        state alone before it) and samples codebook i + 1 - prime."""
        hidden, views, prime = self.hidden[:B], self.depth_kv.views(B), self.layout.depth_prime
        for i in range(self.layout.depth_positions):
            self.depth_pos[0] = i
            self.prev[:B] = self.codes[:B, i - prime] if i >= prime else 0
            feeds = {"hidden": hidden, "prev_code": self.prev[:B], "depth_pos": self.depth_pos}
            feeds.update(self._kv_feeds(self.depth_g, views))
            out = self.depth_g.run(feeds)
            for (l, kv), name in zip(self._kv_index(self.depth_g), self._new_names(self.depth_g)):
                self.depth_kv.data[l, kv, :B, :, i, :] = out[name][:, :, 0, :]
            k = i + 1 - prime
            if k >= 1:
                self.codes[:B, k] = sample_codes(out["logits"], self.layout.allowed[k], samplers, k)[0]

    def _flat_frame(self, B: int, samplers, ban: np.ndarray) -> np.ndarray:
        """K tokens per row: sample at position j, feed it through the backbone (but the last)."""
        lay, rows = self.layout, self.rows.rows[:B]
        ended = np.zeros(B, bool)
        for j in range(lay.tokens_per_frame):
            extra = lay.stop_columns if j == 0 else ()
            codes, stop = sample_codes(self.logits[:B], lay.allowed[j], samplers, j, extra, ~ban)
            self.codes[:B, j] = codes
            ended |= stop
            self.feed[:B, 0] = lay.logits_offset + lay.allowed[j][0] + codes
            if j + 1 < lay.tokens_per_frame:  # the frame's last token is fed by step()
                self._step_rows(rows, range(B), self.feed[:B])
        return ended

    def _step_rows(self, rows: Sequence[Row], slots, feed: np.ndarray, advance: bool = True) -> None:
        """One backbone position for `rows` from `feed`: the batch (slots 0..n-1) or one row's slot.
        Their K/V go into the cache, their logits become pending, and (`advance`) positions move on."""
        slots, n = list(slots), len(rows)
        for i, row in enumerate(rows):
            self.rows.check_fits(row.position, 1, "the stream")
            self.positions[i] = row.position
        batch = slots == list(range(n))
        views = self.kv.views(n) if batch else self.kv.slot_views(slots[0])
        out = self.step_g.run({self.step_g.input_names[0]: feed, "positions": self.positions[:n],
                               **self._kv_feeds(self.step_g, views)})
        if batch:
            self.kv.write_rows([out[name] for name in self._new_names(self.step_g)], n, self.positions[:n])
        else:
            self.kv.write_prefix(self._stack_new(self.step_g, out), slots[0], rows[0].position, 1)
        for i, (row, b) in enumerate(zip(rows, slots)):
            self._pending(b, out, i)
            row.position += advance

    def step(self) -> None:
        """Feed every framed row's frame (or its last token) through the backbone at its own position."""
        B = self.rows.step_batch()
        if B:
            self._step_rows(self.rows.rows[:B], range(B), self.feed[:B], advance=False)
        self.rows.end_step()  # the shared table advances the framed rows

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
