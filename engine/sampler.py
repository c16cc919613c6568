"""Per-stream sampling: greedy, temperature, top-k, top-p, repetition penalty.

Semantics (shared with `cadenza.kernels.sampling`, the on-device twin):
temperature <= 0 is greedy argmax (lowest index on ties); otherwise
probabilities softmax(logits / T) sorted descending (ties: lower index first),
cut to the top_k (0 = off), then to the smallest prefix whose mass reaches
top_p, renormalised, and picked by inverse CDF with one uniform draw from the
stream's own seeded generator. Each stream draws only from its own RNG, so its
output never depends on which other streams share a batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .errors import SamplingError


@dataclass
class SamplingParams:
    """How one stream picks its codes.

    Args:
        temperature: 0 (or `greedy=True`) for argmax decoding.
        top_k: keep the k most likely codes (0 = all).
        top_p: nucleus mass in (0, 1].
        repetition_penalty: >= 1; divides positive / multiplies negative logits of
            codes seen in the last `repetition_window` frames of the same codebook.
        seed: None draws one from the OS (recorded, so a stream can be replayed).
    """

    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    repetition_window: int = 16
    seed: int | None = None
    greedy: bool = False

    def __post_init__(self):
        if self.greedy:
            self.temperature = 0.0
        checks = [
            (isinstance(self.temperature, (int, float)) and self.temperature >= 0,
             f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}"),
            (isinstance(self.top_k, (int, np.integer)) and self.top_k >= 0, f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}"),
            (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty >= 1,
             f"repetition_penalty must be >= 1 (1 = off), got {self.repetition_penalty!r}"),
            (isinstance(self.repetition_window, int) and self.repetition_window >= 0,
             f"repetition_window must be an int >= 0, got {self.repetition_window!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SamplingError(msg)
        if self.seed is None:
            self.seed = int.from_bytes(os.urandom(4), "little")
        elif not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise SamplingError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= 0


def pick(probs_sorted: np.ndarray, order: np.ndarray, top_k: int, top_p: float, u: float) -> int:
    """Inverse-CDF pick from probabilities sorted descending (`order` maps back to ids).

    top-k first, then top-p on the renormalised top-k mass; `u` in [0, 1).
    """
    keep = len(probs_sorted) if top_k <= 0 else min(top_k, len(probs_sorted))
    cum = np.cumsum(probs_sorted[:keep])
    cum /= cum[-1]  # [keep], renormalised, ends at exactly 1
    if top_p < 1.0:
        keep = min(keep, int(np.searchsorted(cum, top_p, side="left")) + 1)
        cum = cum[:keep] / cum[keep - 1]
    i = int(np.searchsorted(cum, u, side="right"))
    return int(order[min(i, keep - 1)])


@dataclass
class StreamSampler:
    """One stream's sampler: its parameters, RNG and per-codebook history."""

    params: SamplingParams
    n_codebooks: int
    rng: np.random.Generator = field(init=False)
    history: np.ndarray = field(init=False)  # [K, W] recent codes, -1 = empty

    def __post_init__(self):
        self.rng = np.random.default_rng(self.params.seed)
        self.history = np.full((self.n_codebooks, max(self.params.repetition_window, 1)), -1, np.int64)
        self._seen = 0

    def sample(self, logits: np.ndarray, codebook: int) -> int:
        """logits [V] (not modified) -> one id for `codebook`."""
        return int(sample_batch(logits[None], [self], codebook)[0])

    def penalise(self, logits: np.ndarray, codebook: int) -> None:
        """Apply the repetition penalty to logits [V] in place (CTRL convention)."""
        p = self.params
        seen = self.history[codebook]
        seen = np.unique(seen[(seen >= 0) & (seen < len(logits))])
        if len(seen):
            v = logits[seen]
            logits[seen] = np.where(v > 0, v / p.repetition_penalty, v * p.repetition_penalty)

    def observe(self, frame: np.ndarray) -> None:
        """Record a finished frame's codes [K] into the repetition history (a ring: order is irrelevant)."""
        self.history[:, self._seen % self.history.shape[1]] = frame
        self._seen += 1


def sample_batch(logits: np.ndarray, samplers: list[StreamSampler], codebook: int) -> np.ndarray:
    """One id per row of logits [B, V] (not modified), row b sampled by `samplers[b]`.

    Vectorised over rows, but every operation is row-wise (elementwise, or a
    sequential cumsum / stable sort along the row), so a row's result is the same
    whatever rows share its batch. Each sampling row draws one uniform from its own RNG.
    """
    B, V = logits.shape
    penal = [b for b, s in enumerate(samplers) if s.params.repetition_penalty > 1 and s.params.repetition_window > 0]
    if penal:
        logits = logits.copy()
        for b in penal:
            samplers[b].penalise(logits[b], codebook)
    out = np.empty(B, np.int64)
    greedy = np.array([s.params.is_greedy for s in samplers])
    if greedy.any():
        out[greedy] = np.argmax(logits[greedy], axis=1)
    rows = np.flatnonzero(~greedy)
    if rows.size:
        out[rows] = _sample_rows(logits[rows], [samplers[b] for b in rows])
    return out


def _sample_rows(logits: np.ndarray, samplers: list[StreamSampler]) -> np.ndarray:
    """Temperature / top-k / top-p rows (the semantics of `pick`, vectorised)."""
    n, V = logits.shape
    r = np.arange(n)[:, None]
    temp = np.array([s.params.temperature for s in samplers])[:, None]
    top_k = np.array([s.params.top_k for s in samplers])
    top_p = np.array([s.params.top_p for s in samplers], np.float64)[:, None]
    u = np.array([s.rng.random() for s in samplers])[:, None]
    z = logits.astype(np.float64) / temp
    w = np.exp(z - z.max(axis=1, keepdims=True))  # [n, V] unnormalised probabilities
    order = _descending(w, int(top_k.max()) if (top_k > 0).all() else V)  # [n, M], M <= V
    M = order.shape[1]
    cum = np.cumsum(w[r, order], axis=1)  # [n, M]
    pos = np.arange(M)[None, :]
    keep = np.where(top_k > 0, np.minimum(top_k, M), M)[:, None]  # [n, 1]
    cum = cum / cum[r, keep - 1]  # renormalised over the top-k
    nucleus = top_p < 1.0
    if nucleus.any():
        keep_p = np.minimum(keep, ((cum < top_p) & (pos < keep)).sum(axis=1, keepdims=True) + 1)
        keep = np.where(nucleus, keep_p, keep)
        cum = np.where(nucleus, cum / cum[r, keep - 1], cum)
    i = ((cum <= u) & (pos < keep)).sum(axis=1, keepdims=True)
    return order[r, np.minimum(i, keep - 1)][:, 0]


def _descending(w: np.ndarray, m: int) -> np.ndarray:
    """Indices of the `m` largest entries of each row, by descending weight, ties by lower index
    (the order a stable descending sort gives). Partitions first when m is well below the width."""
    n, V = w.shape
    if m * 4 >= V:
        return np.argsort(-w, axis=1, kind="stable")
    part = np.argpartition(-w, m - 1, axis=1)[:, :m]  # the m largest, unordered
    r = np.arange(n)[:, None]
    kth = w[r, part].min(axis=1, keepdims=True)
    if ((w == kth).sum(axis=1) > (w[r, part] == kth).sum(axis=1)).any():
        return np.argsort(-w, axis=1, kind="stable")  # a tie straddles the cut: be exact
    sub = np.lexsort((part, -w[r, part]), axis=1)  # by weight, then by index
    return part[r, sub]
