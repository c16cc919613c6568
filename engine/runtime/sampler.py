"""Per-stream sampling: the one definition every backend implements.

Per row, with logits `x` over `V` ids (ids the model must not emit already at -inf):

1. repetition penalty (if > 1): the ids among the stream's last `repetition_window`
   codes of this codebook get `x / p` where `x > 0` and `x * p` otherwise (CTRL);
2. temperature <= 0: greedy, `argmax(x)` (lowest id on ties); stop here;
3. `w = exp(x / T - max(x / T))`, ordered by `w` descending, ties by lower id: `ws`,
   `order`, cumulative sums `c`;
4. top-k: keep `n = min(top_k, V)` (`top_k = 0`: `n = V`);
5. top-p (if < 1), on the top-k mass: `n = min(n, count(c[:n] < top_p * c[n-1]) + 1)`;
6. ids whose `w` is exactly 0 are never kept: `n = min(n, count(ws > 0))`;
7. draw `u = counter_uniform(seed, draws + codebook)` (`runtime/rng.py`) and pick
   `order[min(count(c[:n] <= u * c[n-1]), n - 1)]`.

A stream's `draws` counter advances by K after every frame it samples (end of
speech included), so its draws depend only on its seed and its own history,
never on its batch neighbours. The torch backend runs the same steps
(`cadenza.kernels.sampling`, `cadenza.kernels.penalty`) with the same
uniforms (`cadenza.kernels.rng`): a seed gives the same codes on every backend,
up to float rounding of a draw that lands on a cumulative-sum boundary.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import SamplingError
from .rng import counter_uniform, seed_int64


@dataclass
class SamplingParams:
    """How one stream picks its codes.

    Args:
        temperature: 0 (or `greedy=True`) for argmax decoding.
        top_k: keep the k most likely codes (0 = all).
        top_p: nucleus mass in (0, 1].
        repetition_penalty: >= 1; penalises the codes seen in the last `repetition_window`
            frames of the same codebook (step 1 above).
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
            (_real(self.temperature) and self.temperature >= 0,
             f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}"),
            (_integer(self.top_k) and self.top_k >= 0, f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}"),
            (_real(self.top_p) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (_real(self.repetition_penalty) and self.repetition_penalty >= 1,
             f"repetition_penalty must be >= 1 (1 = off), got {self.repetition_penalty!r}"),
            (_integer(self.repetition_window) and self.repetition_window >= 0,
             f"repetition_window must be an int >= 0, got {self.repetition_window!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SamplingError(msg)
        if self.seed is None:
            self.seed = int.from_bytes(os.urandom(4), "little")
        elif not _integer(self.seed) or self.seed < 0:
            raise SamplingError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalises(self) -> bool:
        return self.repetition_penalty > 1 and self.repetition_window > 0


def _real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass
class StreamSampler:
    """One stream's sampler: its parameters, draw counter and per-codebook history."""

    params: SamplingParams
    n_codebooks: int
    seed: int = field(init=False)
    draws: int = field(init=False, default=0)
    history: np.ndarray = field(init=False)  # [K, W] recent codes, -1 = empty (a ring: order is irrelevant)

    def __post_init__(self):
        self.seed = seed_int64(self.params.seed)
        self.history = np.full((self.n_codebooks, max(self.params.repetition_window, 1)), -1, np.int64)
        self._seen = 0
        self._frame: tuple[int, np.ndarray] | None = None  # (draws, this frame's K draws)

    def sample(self, logits: np.ndarray, codebook: int) -> int:
        """One id from logits [V] (not modified) for `codebook` of the current frame."""
        return int(sample_batch(logits[None], [self], codebook)[0])

    def uniform(self, codebook: int) -> float:
        """This frame's draw for `codebook` (step 7): `counter_uniform(seed, draws + codebook)`, the frame's
        K draws computed in one call the first time the frame asks."""
        if not 0 <= codebook < self.n_codebooks:
            return float(counter_uniform(self.seed, self.draws + codebook))
        if self._frame is None or self._frame[0] != self.draws:
            self._frame = (self.draws, counter_uniform(self.seed, self.draws + np.arange(self.n_codebooks)))
        return float(self._frame[1][codebook])

    def penalise(self, logits: np.ndarray, codebook: int) -> None:
        """Step 1 on logits [V], in place."""
        p = self.params
        seen = self.history[codebook]
        seen = np.unique(seen[(seen >= 0) & (seen < len(logits))])
        if len(seen):
            v = logits[seen]
            logits[seen] = np.where(v > 0, v / p.repetition_penalty, v * p.repetition_penalty)

    def end_frame(self, codes: np.ndarray | None) -> None:
        """After every sampled frame: its codes [K] join the history (not an end of speech), and
        the draw counter advances by K."""
        if codes is not None:
            self.history[:, self._seen % self.history.shape[1]] = codes
            self._seen += 1
        self.draws += self.n_codebooks


def sample_batch(logits: np.ndarray, samplers: list[StreamSampler], codebook: int) -> np.ndarray:
    """One id per row of logits [B, V] (not modified), row b sampled by `samplers[b]`.

    Vectorised over rows, but every operation is row-wise (elementwise, or a sequential
    cumsum / stable sort along the row), so a row's result never depends on its batch.
    """
    B, V = logits.shape
    penal = [b for b, s in enumerate(samplers) if s.params.penalises]
    if penal:
        logits = logits.copy()
        for b in penal:
            samplers[b].penalise(logits[b], codebook)
    greedy = np.array([s.params.is_greedy for s in samplers])
    if not greedy.any():
        return _sample_rows(logits, samplers, codebook)
    out = np.empty(B, np.int64)
    out[greedy] = np.argmax(logits[greedy], axis=1)
    rows = np.flatnonzero(~greedy)
    if rows.size:
        out[rows] = _sample_rows(logits[rows], [samplers[b] for b in rows], codebook)
    return out


def sample_codes(logits: np.ndarray, allowed: tuple[int, int], samplers: list[StreamSampler], codebook: int,
                 extra: tuple[int, ...] = (), extra_ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample a code for each row among the columns `allowed` = [lo, hi) of logits [B, V], plus the
    `extra` columns (end of speech) for the rows where `extra_ok` is True.

    Returns (codes [B]: the chosen column minus lo, ended [B]: an extra column was chosen). The
    candidates are laid out as codes 0..hi-lo-1, then the extra columns, so the repetition
    history (codes) and ties (lowest code first) mean the same on every layout.
    """
    lo, hi = allowed
    cand = logits[:, lo:hi]
    if extra:
        ext = logits[:, list(extra)]
        if extra_ok is not None:
            ext = np.where(extra_ok[:, None], ext, -np.inf)
        cand = np.concatenate([cand, ext], axis=1)  # [B, hi - lo + len(extra)]
    picked = sample_batch(cand, samplers, codebook)
    ended = picked >= hi - lo
    return np.where(ended, 0, picked), ended


def _sample_rows(logits: np.ndarray, samplers: list[StreamSampler], codebook: int) -> np.ndarray:
    """Steps 3-7 for rows that sample."""
    n, V = logits.shape
    r = np.arange(n)[:, None]
    temp = np.array([s.params.temperature for s in samplers])[:, None]
    top_k = np.array([s.params.top_k for s in samplers])
    top_p = np.array([s.params.top_p for s in samplers], np.float64)[:, None]
    u = np.array([s.uniform(codebook) for s in samplers], np.float64)[:, None]
    z = logits.astype(np.float64) / temp
    w = np.exp(z - z.max(axis=1, keepdims=True))  # [n, V] unnormalised probabilities
    order = _descending(w, int(top_k.max()) if (top_k > 0).all() else V)  # [n, M], M <= V
    M = order.shape[1]
    ws = w[r, order]  # [n, M]
    cum = np.cumsum(ws, axis=1)  # [n, M]
    pos = np.arange(M)[None, :]
    keep = np.where(top_k > 0, np.minimum(top_k, M), M)[:, None]  # [n, 1]
    total = cum[r, keep - 1]
    below = ((cum < top_p * total) & (pos < keep)).sum(axis=1, keepdims=True) + 1
    keep = np.where(top_p < 1.0, np.minimum(keep, below), keep)
    keep = np.maximum(np.minimum(keep, (ws > 0).sum(axis=1, keepdims=True)), 1)
    pick = ((cum <= u * cum[r, keep - 1]) & (pos < keep)).sum(axis=1, keepdims=True)
    return order[r, np.minimum(pick, keep - 1)][:, 0]


def _descending(w: np.ndarray, m: int) -> np.ndarray:
    """Indices of the `m` largest entries of each row, by descending weight, ties by lower index
    (the order a stable descending sort gives). Partitions first when m is well below the width."""
    n, V = w.shape
    if m * 4 >= V:
        return np.argsort(-w, axis=1, kind="stable")
    part = np.argpartition(-w, m - 1, axis=1)[:, :m]  # the m largest, unordered
    r = np.arange(n)[:, None]
    kth = w[r, part].min(axis=1, keepdims=True)
    if ((w >= kth).sum(axis=1) > m).any():  # more than m entries reach the m-th largest: a tie straddles the cut
        return np.argsort(-w, axis=1, kind="stable")  # be exact
    sub = np.lexsort((part, -w[r, part]), axis=1)  # by weight, then by index
    return part[r, sub]
