"""The batched generator on ONNX Runtime: prefill, then one frame at a time, for either token layout.

`depth` layout (reference family, CSM): `frame()` samples codebook 0 of every row
from its pending logits, runs the depth decoder for the whole batch (sampling
codebooks 1..K-1), and returns each row's frame; `step()` feeds the frames back
through the backbone for every framed row at its own position.

`flat` layout (Orpheus): a frame is `K` backbone tokens. `frame()` samples token 0,
feeds it through the backbone, samples token 1, ... up to token K-1, each among
the ids its frame position allows; `step()` feeds the last one.

Every backbone call is the same graph (`Stack.run`): a prefill of padded prompts
after each row's cached prefix, a voice's acoustic frames, a batch of steps. A
row's numbers never depend on the other rows: the graphs treat rows independently
and each row samples with its own counter-based draws. Row bookkeeping is the
shared `RowTable`; this class holds the stacks and the batch buffers.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...contract.bundle import Bundle
from ...runtime.generator import PrefillItem, Row, RowTable
from ...runtime.kv_cache import CacheShape, KVCache
from ...runtime.sampler import sample_codes
from .graph import DTYPES, OrtGraph


class Stack:
    """A transformer graph (`backbone` or `depth`) and its KV cache, in either KV mode."""

    def __init__(self, bundle: Bundle, role: str, slots: int, length: int, dims: dict, threads: int | None,
                 spinning: bool):
        kv = bundle.graph(role)["kv"]
        self.in_place = kv["mode"] == "in_place"
        self.dtype = DTYPES[kv.get("dtype", "float32")]
        L = kv["layers"]
        self.past = [kv[k] % l for l in range(L) for k in ("past_key", "past_value")]
        self.out = [kv[k] % l for l in range(L) for k in ("out_key", "out_value")]
        self.graph = OrtGraph(bundle, role, dims, threads, spinning,
                              caller_outputs=frozenset(self.out) if self.in_place else frozenset())
        self.cache = KVCache(CacheShape(L, kv["kv_heads"], kv["head_dim"], length), slots, self.dtype)

    def run(self, feeds: dict, start: int, n: int) -> dict:
        """One call over slots start..start+n-1 (their cache views bound as the past; in place, also as
        the present). In `returned` mode the caller writes the returned entries (`write_step` /
        `write_spans`)."""
        views = self.cache.views(n, start)
        feeds.update(zip(self.past, views))
        return self.graph.run(feeds, dict(zip(self.out, views)) if self.in_place else None)

    def write_step(self, out: dict, n: int, positions: np.ndarray, start: int = 0) -> None:
        """`returned` mode: one new entry per row, row b at positions[b] of slot start + b."""
        if not self.in_place:
            self.cache.write_rows([out[name] for name in self.out], n, positions, start)

    def write_spans(self, out: dict, spans: Sequence[tuple[int, int, int]]) -> None:
        """`returned` mode: (row, slot, start, n) spans of a multi-position call."""
        if not self.in_place:
            new = [out[name] for name in self.out]
            for row, (slot, begin, n) in enumerate(spans):
                self.cache.write_span(new, row, slot, begin, n)

    def close(self) -> None:
        self.graph.close()


class OrtGenerator:
    """Owns the backbone / depth stacks and the batch buffers (a `BatchGenerator`)."""

    def __init__(self, bundle: Bundle, slots: int, max_len: int, threads: int | None = None,
                 spinning: bool = False):
        c, self.layout, self.emb = bundle.constants, bundle.layout, bundle.embedding
        self.n_codebooks = c.n_codebooks
        self.rows = RowTable(slots, max_len)
        dims = {"batch": slots, "seq": max_len, "cache_len": max_len, "depth_len": max(self.layout.depth_positions, 1)}
        self.backbone = Stack(bundle, "backbone", slots, max_len, dims, threads, spinning)
        self.depth = (Stack(bundle, "depth", slots, self.layout.depth_positions, {**dims, "seq": 1}, threads, spinning)
                      if bundle.depth_embedding is not None else None)
        self.depth_emb = bundle.depth_embedding
        self.heads = [OrtGraph(bundle, f"head.{j}", {"batch": slots}, threads, spinning)
                      for j in range(len(self.layout.heads))]  # a flat layout's head, cut per frame position
        self.kv_itemsize = np.dtype(self.backbone.dtype).itemsize
        names = self.backbone.graph.input_names
        self.voice_dim = c.speaker_dim if "voice" in names else 0
        S, K, E = slots, c.n_codebooks, self.emb.slots
        self.logits = np.zeros((S, self.layout.logits_size), np.float32)  # pending backbone logits per row
        self.hidden = np.zeros((S, c.backbone_dim), self.backbone.dtype)
        self.codes = np.zeros((S, K), np.int64)  # the frame (codes) each row produced
        self.ids = np.full((S, 1, E), self.emb.null_row, np.int64)  # a step's table rows
        self.seqlens = np.zeros(S, np.int32)
        self.ones = np.ones(S, np.int32)
        self.no_voice = np.zeros((S, self.voice_dim), self.backbone.dtype)
        self.depth_ids = np.zeros(S, np.int64)
        self.depth_pos = np.zeros(1, np.int64)

    @property
    def kv(self) -> KVCache:
        return self.backbone.cache

    # --- rows -------------------------------------------------------------
    def add(self, row: Row) -> None:
        self.rows.add(row)

    def remove(self, row: Row) -> None:
        """Free `row`'s slot at once; the last row's state moves into it."""
        moved = self.rows.remove(row)
        if moved is not None:
            self.kv.move(moved.src, moved.dst, moved.row.position)
            for buf in (self.logits, self.hidden, self.codes, self.ids):
                buf[moved.dst] = buf[moved.src]

    # --- table rows -----------------------------------------------------------
    def _frame_rows(self, frame: np.ndarray, out: np.ndarray) -> None:
        """A depth frame's K codes -> the table rows of one position (`out` [E])."""
        out[:] = np.asarray(self.emb.code_offsets) + frame

    def _prompt_ids(self, seqs: list[np.ndarray]) -> np.ndarray:
        """Rows of positions (each [n_i, E]) padded with the null row to the longest: [n, P, E]."""
        P = max(len(s) for s in seqs)
        ids = np.full((len(seqs), P, self.emb.slots), self.emb.null_row, np.int64)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
        return ids

    def _text_rows(self, tokens: Sequence[int]) -> np.ndarray:
        rows = np.full((len(tokens), self.emb.slots), self.emb.null_row, np.int64)
        rows[:, 0] = self.emb.text_offset + np.asarray(tokens, np.int64)
        return rows

    # --- prompts ------------------------------------------------------------
    def prefill(self, items: Sequence[PrefillItem]) -> None:
        """Prefill several rows, each after its own `position` cached entries (its voice prefix):
        one call per run of consecutive slots, prompts padded to the longest."""
        for it in items:
            self.rows.check_fits(it.row.position, len(it.tokens))
        runs: list[list[tuple[int, PrefillItem]]] = []
        for b, it in sorted(((self.rows.index(it.row), it) for it in items), key=lambda x: x[0]):
            if runs and runs[-1][-1][0] == b - 1:
                runs[-1].append((b, it))
            else:
                runs.append([(b, it)])
        for run in runs:
            voices = None
            if self.voice_dim:
                voices = np.stack([np.asarray(it.voice, np.float32).reshape(-1) for _, it in run])
            self._extend([it.row for _, it in run], run[0][0], [self._text_rows(it.tokens) for _, it in run], voices)

    def _extend(self, rows: list[Row], start: int, seqs: list[np.ndarray], voices: np.ndarray | None) -> None:
        """Append positions (table rows [n_i, E] each) to rows in slots start.. after their cached ones."""
        n, P = len(rows), max(len(s) for s in seqs)
        if n > 1 and max(r.position for r in rows) + P > self.kv.shape.max_len:
            for i, (row, seq) in enumerate(zip(rows, seqs)):  # padding would run past a slot's end: one by one
                self._extend([row], start + i, [seq], None if voices is None else voices[i:i + 1])
            return
        ids = self._prompt_ids(seqs)
        lens = np.array([len(s) for s in seqs], np.int32)
        begins = np.array([r.position for r in rows], np.int32)
        feeds = {"ids": ids, "seqlens_k": begins + lens - 1, "query_seqlens": lens}
        if self.voice_dim:
            feeds["voice"] = (voices if voices is not None else self.no_voice[:n]).astype(self.backbone.dtype)
        out = self.backbone.run(feeds, start, n)
        self.backbone.write_spans(out, [(start + i, int(begins[i]), int(lens[i])) for i in range(n)])
        for i, row in enumerate(rows):
            self._pending(start + i, out, i)
            row.position += int(lens[i])

    def _pending(self, b: int, out: dict, i: int) -> None:
        """Row `b` takes row `i` of a backbone output as its pending logits (and hidden state)."""
        if "logits" in out:
            self.logits[b] = out["logits"][i]
        if "hidden" in out:
            self.hidden[b] = out["hidden"][i]

    def load_prefix(self, row: Row, kv: np.ndarray) -> None:
        """Copy cached prefix entries kv [L, 2, Hkv, n, Dh] into `row`'s slot."""
        self.rows.check_fits(0, kv.shape[3], "the voice prefix")
        self.kv.copy_prefix(kv, self.rows.index(row), kv.shape[3])
        row.position = kv.shape[3]

    def read_prefix(self, row: Row) -> np.ndarray:
        """A copy of `row`'s valid entries: [L, 2, Hkv, n, Dh]."""
        return self.kv.read_prefix(self.rows.index(row), row.position)

    def feed_frames(self, row: Row, codes: np.ndarray) -> None:
        """Append frames codes [K, F] to `row` (an acoustic prompt), all in one backbone call."""
        F = codes.shape[1]
        self.rows.check_fits(row.position, F * self.layout.tokens_per_frame, "the voice prompt")
        if self.layout.kind == "flat":
            seq = np.full((F * self.layout.tokens_per_frame, self.emb.slots), self.emb.null_row, np.int64)
            for f in range(F):
                for j, c in enumerate(codes[:, f]):
                    seq[f * self.layout.tokens_per_frame + j, 0] = self.emb.text_offset + self.layout.token_id(j, int(c))
        else:
            seq = np.empty((F, self.emb.slots), np.int64)
            for f in range(F):
                self._frame_rows(codes[:, f], seq[f])
        self._extend([row], self.rows.index(row), [seq], None)

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
        if self.depth is not None:
            self._depth(B, samplers)
        if lay.eos == "zero_frame":  # end of speech is a frame of K zeros, known only now
            ended = ~ban & (self.codes[:B] == 0).all(axis=1)
        np.add(self.codes[:B], np.asarray(self.emb.code_offsets), out=self.ids[:B, 0, :])
        return ended

    def _depth(self, B: int, samplers) -> None:
        """The depth decoder over the batch: position i feeds the code its table row names (the
        hidden state alone at a priming position) and samples codebook i + 1 - prime."""
        prime, emb = self.layout.depth_prime, self.depth_emb
        feeds = {"hidden": self.hidden[:B], "ids": self.depth_ids[:B], "depth_pos": self.depth_pos}
        for i in range(self.layout.depth_positions):
            self.depth_pos[0] = i
            off = emb.offsets[i]
            if off is None:
                self.depth_ids[:B] = emb.null_row
            else:
                np.add(self.codes[:B, i - prime], off, out=self.depth_ids[:B])
            out = self.depth.run(feeds, 0, B)
            self.depth.write_step(out, B, np.full(B, i, np.int64))
            k = i + 1 - prime
            if k >= 1:
                logits = out["logits"] if out["logits"].dtype == np.float32 else out["logits"].astype(np.float32)
                self.codes[:B, k] = sample_codes(logits, self.layout.allowed[k], samplers, k)[0]

    def _flat_frame(self, B: int, samplers, ban: np.ndarray) -> np.ndarray:
        """K tokens per row: sample at position j, feed it through the backbone (but the last)."""
        lay = self.layout
        ended = np.zeros(B, bool)
        for j in range(lay.tokens_per_frame):
            logits, lo = self._logits(j, B)
            extra = tuple(c - lo for c in lay.stop_columns) if j == 0 else ()
            allowed = (lay.allowed[j][0] - lo, lay.allowed[j][1] - lo)
            codes, stop = sample_codes(logits, allowed, samplers, j, extra, ~ban)
            self.codes[:B, j] = codes
            ended |= stop
            self.ids[:B, 0, 0] = self.emb.text_offset + lay.logits_offset + lay.allowed[j][0] + codes
            if j + 1 < lay.tokens_per_frame:  # the frame's last token is fed by step()
                self._step(self.rows.rows[:B])
        return ended

    def _logits(self, j: int, B: int) -> tuple[np.ndarray, int]:
        """The pending logits of frame position j for rows 0..B-1, and the column their first one is:
        with a cut head, graph head.{j} over the rows' hidden states."""
        if not self.heads:
            return self.logits[:B], 0
        out = self.heads[j].run({"hidden": self.hidden[:B]})["logits"]
        return (out if out.dtype == np.float32 else out.astype(np.float32)), self.layout.heads[j][0]

    def _step(self, rows: Sequence[Row], advance: bool = True) -> None:
        """One backbone position for rows 0..n-1 (their table rows in `ids`): K/V into the cache, logits
        pending, and (`advance`) positions moved on."""
        n = len(rows)
        for i, row in enumerate(rows):
            self.rows.check_fits(row.position, 1, "the stream")
            self.seqlens[i] = row.position
        out = self.backbone.run({"ids": self.ids[:n], "seqlens_k": self.seqlens[:n], "query_seqlens": self.ones[:n],
                                 **({"voice": self.no_voice[:n]} if self.voice_dim else {})}, 0, n)
        self.backbone.write_step(out, n, self.seqlens[:n])
        for i, row in enumerate(rows):
            self._pending(i, out, i)
            row.position += advance

    def step(self) -> None:
        """Feed every framed row's frame (or its last token) through the backbone at its own position."""
        B = self.rows.step_batch()
        if B:
            self._step(self.rows.rows[:B], advance=False)
        self.rows.end_step()  # the shared table advances the framed rows

    def close(self) -> None:
        for g in self.heads:
            g.close()
        self.backbone.close()
        if self.depth is not None:
            self.depth.close()
