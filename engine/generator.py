"""The batched generator: prefill, then per frame one backbone step plus the depth steps.

Every active stream is one row of the batch, and row `b` lives in KV slot `b`
(rows are kept compact: see `remove`). One call of `frame()` samples codebook 0
for every row from its pending logits, runs the `K - 1` depth steps for the
whole batch and returns each row's frame; `step()` then feeds the frames back
through the backbone for every row at its own position. A row's numbers never
depend on the other rows: the graphs treat rows independently and each row
samples from its own RNG.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import text
from .backend import Backend
from .bundle import Bundle
from .kv_cache import CacheShape, KVCache
from .sampler import StreamSampler, sample_batch


@dataclass(eq=False)
class Row:
    """Host-side control state of one row (passed in explicitly, moshi-style)."""

    sampler: StreamSampler
    position: int = 0  # next cache position to write (= valid length)
    frames: int = 0  # frames generated in the current segment
    min_frames: int = 0  # end-of-speech refused before this
    max_frames: int = 0  # stop here (with `forced`, exactly here)
    forced: bool = False
    owner: object = field(default=None, repr=False)


class Generator:
    """Owns the backbone / depth graphs, their KV caches and the batch buffers."""

    def __init__(self, bundle: Bundle, backend: Backend, slots: int, max_len: int, threads: int | None = None):
        c = bundle.manifest["constants"]
        self.K, self.C, self.eos = c["n_codebooks"], c["codebook_size"], c["eos_id"]
        self.max_len, self.slots = max_len, slots
        dims = {"batch": slots, "prompt_len": max_len, "cache_len": max_len, "depth_len": max(self.K - 1, 1)}
        self.prefill_g = backend.open(bundle, "backbone_prefill", {**dims, "batch": 1}, threads)
        self.step_g = backend.open(bundle, "backbone_step", dims, threads)
        self.depth_g = backend.open(bundle, "depth_step", dims, threads) if self.K > 1 else None
        self.kv = KVCache(CacheShape(c["backbone_layers"], c["kv_heads"], c["head_dim"], max_len), slots)
        self.depth_kv = (KVCache(CacheShape(c["depth_layers"], c["depth_kv_heads"], c["depth_head_dim"], self.K - 1), slots)
                         if self.K > 1 else None)
        self.rows: list[Row] = []
        S, D = slots, c["backbone_dim"]
        self.logits = np.zeros((S, self.C + 1), np.float32)  # pending codebook-0 logits per row
        self.hidden = np.zeros((S, D), np.float32)
        self.codes = np.zeros((S, self.K), np.int64)  # the frame each row feeds back
        self.positions = np.zeros(S, np.int64)
        self.prev = np.zeros(S, np.int64)
        self.depth_pos = np.zeros(1, np.int64)
        self._framed: set[Row] = set()  # the rows the last frame() sampled (Row hashes by identity)

    # --- rows -------------------------------------------------------------
    @property
    def batch(self) -> int:
        return len(self.rows)

    def add(self, row: Row) -> int:
        """Give `row` the next slot (the caller checked one is free); returns its index."""
        assert len(self.rows) < self.slots, "no free slot"
        self.rows.append(row)
        return len(self.rows) - 1

    def index(self, row: Row) -> int:
        """The current row index of `row` (rows move when others leave)."""
        return next(i for i, r in enumerate(self.rows) if r is row)

    def remove(self, b: int) -> None:
        """Free row `b` at once: the last row moves into its slot, keeping rows compact."""
        last = len(self.rows) - 1
        if b != last:
            moved = self.rows[last]
            self.kv.move(last, b, moved.position)
            for buf in (self.logits, self.hidden, self.codes):  # positions/prev are rebuilt each step
                buf[b] = buf[last]
            self.rows[b] = moved
        self.rows.pop()

    # --- the three phases -------------------------------------------------
    def prefill(self, b: int, tokens: list[int], voice: np.ndarray, start: int = 0) -> None:
        """Prefill row `b` with `tokens` after `start` cached positions (0: a fresh prompt)."""
        self.rows[b].position = start
        self.prefill_many([(b, tokens, voice)])

    def prefill_many(self, items: list[tuple[int, list[int], np.ndarray]]) -> None:
        """Prefill several rows in one call: (row, tokens, voice) each, after the row's own
        `position` cached entries (its voice prefix). Rows are padded to the longest prompt.

        Only the valid cached positions are passed (a small copy; prefill is outside the
        decode loop), so a prompt attends to its own prefix rather than to a whole masked slot.
        """
        n, P = len(items), max(len(t) for _, t, _ in items)
        starts = [self.rows[b].position for b, _, _ in items]
        for (_, t, _), st in zip(items, starts):
            self.kv.check_fits(st, len(t))
        tok = np.full((n, P), text.PAD, np.int64)  # [n, P]
        for i, (_, t, _) in enumerate(items):
            tok[i, :len(t)] = t
        feeds = {"tokens": tok, "voice": np.stack([np.asarray(v, np.float32).reshape(-1) for _, _, v in items]),
                 "lengths": np.array([len(t) for _, t, _ in items], np.int64), "start": np.array(starts, np.int64)}
        T = max(starts)
        shape = self.kv.shape
        past = [np.zeros((n, shape.kv_heads, T, shape.head_dim), np.float32) for _ in range(2 * shape.layers)]
        for i, (b, _, _) in enumerate(items):
            for a, v in zip(past, self.kv.slot_views(b)):
                a[i, :, :starts[i]] = v[0, :, :starts[i]]
        feeds.update(self._kv_feeds(self.prefill_g, past))
        out = self.prefill_g.run(feeds)
        new = self._stack_new(self.prefill_g, out)  # [L, 2, n, Hkv, P, Dh]
        for i, ((b, t, _), st) in enumerate(zip(items, starts)):
            self.kv.write_prefix(new[:, :, i:i + 1], b, st, len(t))
            self.logits[b], self.hidden[b] = out["logits"][i], out["hidden"][i]
            self.rows[b].position = st + len(t)

    def load_prefix(self, b: int, kv: np.ndarray) -> None:
        """Copy cached prefix entries kv [L, 2, Hkv, n, Dh] into row `b`'s slot."""
        self.kv.copy_prefix(kv, b, kv.shape[3])
        self.rows[b].position = kv.shape[3]

    def read_prefix(self, b: int) -> np.ndarray:
        """A copy of row `b`'s valid entries: [L, 2, Hkv, n, Dh]."""
        return self.kv.read_prefix(b, self.rows[b].position)

    def feed_frames(self, b: int, codes: np.ndarray) -> None:
        """Append frames codes [K, F] to row `b` through the step graph (an acoustic prompt)."""
        views = self.kv.slot_views(b)
        pos = np.zeros(1, np.int64)
        for f in range(codes.shape[1]):
            pos[0] = self.rows[b].position
            self.kv.check_fits(int(pos[0]), 1, "the voice prompt")
            feeds = {"codes": np.ascontiguousarray(codes[None, :, f]), "positions": pos}
            feeds.update(self._kv_feeds(self.step_g, views))
            out = self.step_g.run(feeds)
            self.kv.write_prefix(self._stack_new(self.step_g, out), b, int(pos[0]), 1)
            self.rows[b].position += 1

    def frame(self) -> list[np.ndarray | None]:
        """Sample one frame for every row: [K] codes, or None where the row chose end-of-speech."""
        B = self.batch
        self._framed = set(self.rows)
        result: list[np.ndarray | None] = []
        logits = self.logits[:B].copy()
        ban = [b for b, row in enumerate(self.rows) if row.forced or row.frames < row.min_frames]
        logits[ban, self.eos] = -np.inf  # end-of-speech refused before the minimum / with frames=N
        c0s = sample_batch(logits, [row.sampler for row in self.rows], 0)
        for b, c0 in enumerate(c0s):
            self.prev[b] = self.codes[b, 0] = c0 if c0 != self.eos else 0
            result.append(None if c0 == self.eos else int(c0))
        if self.depth_g is not None and B:
            self._depth(B)
        frames = []
        for b, (row, c0) in enumerate(zip(self.rows, result)):
            if c0 is None:
                frames.append(None)
                continue
            row.frames += 1
            row.sampler.observe(self.codes[b])
            frames.append(self.codes[b].copy())
        return frames

    def _depth(self, B: int) -> None:
        hidden, prev = self.hidden[:B], self.prev[:B]
        views = self.depth_kv.views(B)
        samplers = [row.sampler for row in self.rows]
        for p in range(self.K - 1):
            self.depth_pos[0] = p
            feeds = {"hidden": hidden, "prev_code": prev, "depth_pos": self.depth_pos}
            feeds.update(self._kv_feeds(self.depth_g, views))
            out = self.depth_g.run(feeds)
            for (l, kv), name in zip(self._kv_index(self.depth_g), self._new_names(self.depth_g)):
                self.depth_kv.data[l, kv, :B, :, p, :] = out[name][:, :, 0, :]
            self.codes[:B, p + 1] = self.prev[:B] = sample_batch(out["logits"], samplers, p + 1)

    def step(self) -> None:
        """Feed every row's last frame through the backbone at its own position.

        Rows added since `frame()` (streams admitted while the codec decoded) have no frame
        yet: they are the last rows, and the step covers the rows before them.
        """
        B = self.batch
        while B and self.rows[B - 1] not in self._framed:
            B -= 1
        if any(r not in self._framed for r in self.rows[:B]):
            raise RuntimeError("internal: a row added after frame() sits before a framed row")
        if not B:
            return
        for b, row in enumerate(self.rows[:B]):
            self.positions[b] = row.position
        self.kv.check_fits(int(self.positions[:B].max()), 1, "the stream")
        feeds = {"codes": self.codes[:B], "positions": self.positions[:B]}
        feeds.update(self._kv_feeds(self.step_g, self.kv.views(B)))
        out = self.step_g.run(feeds)
        self.kv.write_rows([out[n] for n in self._new_names(self.step_g)], B, self.positions[:B])
        self.logits[:B], self.hidden[:B] = out["logits"], out["hidden"]
        for row in self.rows[:B]:
            row.position += 1

    # --- manifest plumbing (names come from the manifest only) -------------
    @staticmethod
    def _kv_index(g) -> list[tuple[int, int]]:
        return [(l, kv) for l in range(g.kv_layers) for kv in (0, 1)]

    @staticmethod
    def _new_names(g) -> list[str]:
        return [n for l in range(g.kv_layers) for n in (g.kv["new_key"] % l, g.kv["new_value"] % l)]

    @staticmethod
    def _kv_feeds(g, views: list[np.ndarray]) -> dict:
        names = [n for l in range(g.kv_layers) for n in (g.kv["past_key"] % l, g.kv["past_value"] % l)]
        return dict(zip(names, views))

    def _stack_new(self, g, out) -> np.ndarray:
        """Prefill outputs -> [L, 2, 1, Hkv, P, Dh] (one copy, outside the decode loop)."""
        names = self._new_names(g)
        L = g.kv_layers
        return np.stack([np.stack([out[names[2 * l]], out[names[2 * l + 1]]]) for l in range(L)])

    def close(self) -> None:
        for g in (self.prefill_g, self.step_g, self.depth_g):
            if g is not None:
                g.close()
