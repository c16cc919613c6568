"""One whole frame as one device function: what the torch backend captures in a CUDA graph.

`FrameStep(ctrl)` for a batch of `n` rows (slots `0..n-1`, `n` a padded bucket):

1. sample codebook 0 from the pending logits (end-of-speech banned where the
   host says so), per row, with `cadenza.kernels.sampling.sample` and uniforms
   `counter_uniform(seed, draws + k)` (the runtime sampler's semantics and draws):
   no host RNG, no host sync;
2. the `K - 1` depth steps (the model's DepthDecoder modules), each writing its
   K/V at depth position `p` in place and sampling codebook `p + 1`;
3. the backbone step on the new frame (the model's Backbone, attending to the
   slot's cache masked by its length), its K/V for every layer written in place
   at each row's position with one `index_put_`, producing the next pending logits;
4. the frame into the device ring buffer, the repetition history, the draw counters.

`ctrl` [n, 3] int64 is the only per-frame host input: each row's position, a
ban-end-of-speech flag and a valid flag (0 for the padding rows of a bucket and
for a row whose slot is full: their K/V writes are skipped).

Why not `DepthDecoder.forward`: it picks its head with `heads[depth_pos[0]]`,
a tensor index that syncs with the host (not allowed in a capture). The depth
position of each of the K - 1 steps is a Python constant here, and the numbers
are the same (`in_proj(h) * 1` at p = 0, `+ in_proj(h) * 0` dropped after).
"""
from __future__ import annotations

import torch
from torch import nn

from cadenza.kernels._common import use_triton
from cadenza.kernels.penalty import apply_repetition_penalty
from cadenza.kernels.rng import counter_uniform
from cadenza.kernels.sampling import sample

from .state import DeviceState


def penalise_no_sync(logits: torch.Tensor, ids: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """`apply_repetition_penalty_reference` without its host-side id check (for CUDA without Triton).

    logits [B, V] (in place), ids [B, W] with -1 = empty (all < V), penalty [B].
    """
    B, V = logits.shape
    index = torch.where(ids >= 0, ids, V)  # [B, W]; column V collects the empties
    seen = torch.zeros(B, V + 1, dtype=torch.bool, device=logits.device).scatter_(1, index, True)[:, :V]
    x = logits.float()
    p = penalty.float()[:, None]  # [B, 1]
    logits.copy_(torch.where(seen, torch.where(x > 0, x / p, x * p), x))
    return logits


def write_kv(cache: torch.Tensor, new: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor,
             valid: torch.Tensor) -> None:
    """cache [L, 2, S, H, T, D] <- new [L, 2, n, H, D] at each row's (slot, position): one index_put_.

    Rows with valid == 0 write their own slot's last position instead of being
    skipped: a padding row owns a free slot, and a row past its slot leaves (or
    fails) before that slot is read again.
    """
    T = cache.shape[4]
    at = torch.where(valid > 0, pos, T - 1)  # [n]
    cache[:, :, rows, :, at, :] = new.permute(2, 0, 1, 3, 4)  # advanced indices first: [n, L, 2, H, D]


class FrameStep(nn.Module):
    """Sample a frame for slots 0..n-1 and run the backbone step on it (see the module docstring)."""

    def __init__(self, model, state: DeviceState):
        super().__init__()
        cfg = model.cfg
        self.K, self.C, self.eos = cfg.n_codebooks, cfg.codebook_size, cfg.eos_id
        self.backbone, self.depth, self.state = model.backbone, model.depth, state
        dev = state.kv.device
        # Triton kernels on CUDA; the torch references on the CPU (their host checks are free there);
        # a sync-free torch twin of the penalty on CUDA without Triton (CADENZA_NO_TRITON=1), so a
        # capture stays legal.
        self.no_sync_twins = dev.type == "cuda" and not use_triton(state.kv)

    def forward(self, ctrl: torch.Tensor) -> torch.Tensor:
        """ctrl [n, 3] int64 (position, ban_eos, valid) -> the frame [n, K] (a view of `state.out`)."""
        st, n = self.state, ctrl.shape[0]
        # [n] each; contiguous copies, as the kernels index them with unit stride
        pos, ban, valid = ctrl[:, 0].contiguous(), ctrl[:, 1] != 0, ctrl[:, 2].contiguous()
        logits = st.logits[:n].clone()  # [n, C + 1]
        logits[:, self.eos] = torch.where(ban, float("-inf"), logits[:, self.eos])
        c0 = self._sample(logits, 0, n)  # [n], may be EOS
        eos = c0 == self.eos
        code0 = c0.masked_fill(eos, 0)
        st.out[:n, 0] = c0
        st.codes[:n, 0] = code0
        if self.depth is not None:
            self._depth(n, code0)
        self._backbone_step(n, pos, valid)
        self._observe(n, eos)
        return st.out[:n]

    def _sample(self, logits: torch.Tensor, k: int, n: int) -> torch.Tensor:
        """Codebook k for rows 0..n-1: repetition penalty, then temperature / top-k / top-p."""
        st = self.state
        cols = torch.arange(st.max_window, device=logits.device)  # [W]
        ids = torch.where(cols[None] < st.window[:n, None], st.history[:n, k], -1)  # [n, W]
        if self.no_sync_twins:
            penalise_no_sync(logits, ids, st.penalty[:n])
        else:
            apply_repetition_penalty(logits, ids, st.penalty[:n])
        u = counter_uniform(st.seed[:n], st.draws[:n] + k)  # [n]
        return sample(logits, st.temperature[:n], st.top_k[:n], st.top_p[:n], u)

    def _depth(self, n: int, prev: torch.Tensor) -> None:
        st, d, C = self.state, self.depth, self.C
        h_in = d.in_proj(st.hidden[:n])  # [n, Dd]
        pk = [st.dkv[l, 0, :n] for l in range(st.dkv.shape[0])]  # [n, Hd, K-1, Dd] each
        pv = [st.dkv[l, 1, :n] for l in range(st.dkv.shape[0])]
        for p in range(self.K - 1):
            x = d.code_emb(prev + p * C)  # [n, Dd]
            if p == 0:
                x = x + h_in
            at = torch.full((n,), p, dtype=torch.int64, device=x.device)  # [n]
            h, nk, nv = d.transformer(x[:, None], at[:, None], pk, pv, at)  # h [n, 1, Dd]
            for l, (k_new, v_new) in enumerate(zip(nk, nv)):  # [n, Hd, 1, Dd]
                st.dkv[l, 0, :n, :, p] = k_new[:, :, 0]
                st.dkv[l, 1, :n, :, p] = v_new[:, :, 0]
            logits = (h[:, 0] @ d.heads[p]).float()  # [n, C]
            prev = self._sample(logits, p + 1, n)
            st.out[:n, p + 1] = prev
            st.codes[:n, p + 1] = prev

    def _backbone_step(self, n: int, pos: torch.Tensor, valid: torch.Tensor) -> None:
        st, bb = self.state, self.backbone
        L = st.kv.shape[0]
        x = bb.embed_codes(st.codes[:n])  # [n, 1, D]
        h, nk, nv = bb(x, pos[:, None], [st.kv[l, 0, :n] for l in range(L)],
                       [st.kv[l, 1, :n] for l in range(L)], pos)  # h [n, 1, D]
        new = torch.stack([torch.stack([k[:, :, 0], v[:, :, 0]]) for k, v in zip(nk, nv)])  # [L, 2, n, Hkv, Dh]
        write_kv(st.kv, new, st.rows[:n], pos, valid)
        last = h[:, 0]  # [n, D]
        st.logits[:n] = bb.head(last).float()
        st.hidden[:n] = last

    def _observe(self, n: int, eos: torch.Tensor) -> None:
        """Ring row, repetition history (frames that are not end-of-speech) and draw counters."""
        st = self.state
        st.ring.index_copy_(0, st.ring_at, st.out[None])  # [1, S, K] into row ring_at
        st.ring_at.add_(1).remainder_(st.ring_len)
        hist = st.history[:n]  # [n, K, W]
        rolled = torch.cat([st.codes[:n, :, None], hist[:, :, :-1]], dim=2)  # newest first
        hist.copy_(torch.where(eos[:, None, None], hist, rolled))
        st.draws[:n] += self.K
