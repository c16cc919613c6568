"""The torch backend's device state: every buffer one frame reads or writes, allocated once.

Slot-major and static: row `b` of the batch lives in slot `b` of every buffer
(rows are compact, as in `runtime/kv_cache.py`). The KV caches keep that module's
layer-major layout `[L, 2, S, Hkv, T, Dh]`, so a batch over slots `0..n-1` is
the contiguous view `kv[l, kv, :n]` and nothing is copied to bind it.

Per-slot sampling parameters live on the device too, so sampling runs inside
the captured frame with no host sync. Everything is an `nn.Module` buffer:
`torch.compile(mode="reduce-overhead")` treats buffers as static inputs, so the
in-place writes do not make it give up its CUDA graphs.
"""
from __future__ import annotations

import torch
from torch import nn

from ...runtime.rng import seed_int64
from ...runtime.sampler import SamplingParams


class DeviceState(nn.Module):
    """All device buffers of one generator (shapes in the comments; S = slots)."""

    def __init__(self, cfg, slots: int, max_len: int, device, dtype: torch.dtype, ring: int = 64,
                 max_window: int = 64):
        super().__init__()
        b, d, K, C = cfg.backbone, cfg.depth, cfg.n_codebooks, cfg.codebook_size
        S, self.slots, self.max_len, self.K = slots, slots, max_len, K
        self.max_window = max(max_window, 1)
        f32, i64 = {"device": device, "dtype": torch.float32}, {"device": device, "dtype": torch.int64}
        self.register_buffer("kv", torch.zeros(b.n_layers, 2, S, b.n_kv_heads, max_len, b.head_dim,
                                               device=device, dtype=dtype))  # [L, 2, S, Hkv, T, Dh]
        dk = max(K - 1, 1)
        self.register_buffer("dkv", torch.zeros(d.n_layers, 2, S, d.n_kv_heads, dk, d.head_dim,
                                                device=device, dtype=dtype))  # [Ld, 2, S, Hd, K-1, Dd]
        self.register_buffer("logits", torch.zeros(S, C + 1, **f32))  # pending codebook-0 logits
        self.register_buffer("hidden", torch.zeros(S, b.dim, device=device, dtype=dtype))  # [S, D]
        self.register_buffer("codes", torch.zeros(S, K, **i64))  # the frame fed back (EOS -> 0)
        self.register_buffer("out", torch.zeros(S, K, **i64))  # the frame returned (codebook 0 may be EOS)
        self.register_buffer("rows", torch.arange(S, **i64))  # slot index of each row
        self.register_buffer("temperature", torch.zeros(S, **f32))
        self.register_buffer("top_k", torch.zeros(S, device=device, dtype=torch.int32))
        self.register_buffer("top_p", torch.ones(S, **f32))
        self.register_buffer("seed", torch.zeros(S, **i64))
        self.register_buffer("draws", torch.zeros(S, **i64))  # uniforms drawn so far (K per frame)
        self.register_buffer("penalty", torch.ones(S, **f32))
        self.register_buffer("window", torch.zeros(S, **i64))
        self.register_buffer("history", torch.full((S, K, self.max_window), -1, **i64))  # [S, K, W], newest first
        self.register_buffer("ring", torch.zeros(ring, S, K, **i64))  # [R, S, K] the last R frames
        self.register_buffer("ring_at", torch.zeros(1, **i64))  # next ring row to write
        self.slot_buffers = ("logits", "hidden", "codes", "out", "temperature", "top_k", "top_p", "seed",
                             "draws", "penalty", "window", "history")

    @property
    def ring_len(self) -> int:
        return self.ring.shape[0]

    def reset_slot(self, b: int, p: SamplingParams, draws: int = 0) -> None:
        """Give slot `b` a stream: its sampling parameters, its draw counter, an empty history."""
        self.temperature[b] = float(p.temperature)
        self.top_k[b] = int(p.top_k)
        self.top_p[b] = float(p.top_p)
        self.seed[b] = seed_int64(p.seed)
        self.draws[b] = draws
        on = p.penalises
        self.penalty[b] = float(p.repetition_penalty) if on else 1.0
        self.window[b] = min(int(p.repetition_window), self.max_window) if on else 0
        self.history[b] = -1

    def move(self, src: int, dst: int, n: int) -> None:
        """Move slot `src` (its first `n` KV positions and all per-slot state) into slot `dst`."""
        if src == dst:
            return
        if n > 0:
            self.kv[:, :, dst, :, :n] = self.kv[:, :, src, :, :n]
        for name in self.slot_buffers:
            buf = getattr(self, name)
            buf[dst] = buf[src]

    def clear(self) -> None:
        """Back to the state at construction (after a capture's warm-up ran on it)."""
        for name in ("kv", "dkv", "logits", "hidden", "codes", "out", "temperature", "seed", "draws", "window",
                     "ring", "ring_at"):
            getattr(self, name).zero_()
        self.top_k.zero_()
        self.top_p.fill_(1.0)
        self.penalty.fill_(1.0)
        self.history.fill_(-1)
