"""A Llama-style decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU).

One attention formulation serves the eager reference and the exported graphs:
queries attend to a read-only past cache (masked by each row's valid length)
and to the new keys of this call (causal), scored separately and joined in one
softmax. The past cache is never concatenated or returned; only the new K/V
entries come back, and the caller writes them into its cache.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import TransformerConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate `x` [B, H, P, D] by `positions` [B, P] (half-split layout)."""
    freqs = positions.to(torch.float32)[:, None, :, None] * inv_freq  # [B, 1, P, D/2]
    cos, sin = freqs.cos(), freqs.sin()
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        # Exported graphs cut the past to the longest valid row (one Slice: the step then reads
        # what the batch needs, not the whole slot). Off in eager / CUDA-graph use: a
        # data-dependent length would need a host sync and break static shapes there.
        self.trim_past = False

    def forward(self, x, positions, past_k, past_v, past_len):
        """Attend `x` [B, P, D] to the past cache and to itself.

        Args:
            positions: [B, P] absolute positions of the new tokens.
            past_k, past_v: [B, Hkv, T, Dh] read-only cache (T may be 0).
            past_len: [B] how many cache entries of each row are valid.
        Returns:
            (out [B, P, D], new_k [B, Hkv, P, Dh], new_v [B, Hkv, P, Dh])
        """
        B, P, _ = x.shape
        G, Dh = self.n_heads // self.n_kv, self.head_dim
        q = self.q_proj(x).view(B, P, self.n_heads, Dh).transpose(1, 2)  # [B, H, P, Dh]
        k = self.k_proj(x).view(B, P, self.n_kv, Dh).transpose(1, 2)  # [B, Hkv, P, Dh]
        v = self.v_proj(x).view(B, P, self.n_kv, Dh).transpose(1, 2)
        q, k = rope(q, positions, self.inv_freq), rope(k, positions, self.inv_freq)
        # group the query heads that share a kv head: [B, Hkv, G*P, Dh]
        qg = q.reshape(B, self.n_kv, G * P, Dh) * (1.0 / math.sqrt(Dh))
        if self.trim_past:  # read only the positions some row still needs: [B, Hkv, max(past_len), Dh]
            t = past_len.max()
            past_k, past_v = past_k[:, :, :t], past_v[:, :, :t]
        s_past = qg @ past_k.transpose(2, 3)  # [B, Hkv, G*P, T]
        s_new = qg @ k.transpose(2, 3)  # [B, Hkv, G*P, P]
        T = past_k.shape[2]
        past_ok = torch.arange(T, device=x.device)[None, :] < past_len[:, None]  # [B, T]
        causal = torch.ones(P, P, dtype=torch.bool, device=x.device).tril()  # [P, P]
        s_past = s_past.masked_fill(~past_ok[:, None, None, :], float("-inf"))
        s_new = s_new.masked_fill(~causal.repeat(G, 1)[None, None], float("-inf"))
        p = torch.softmax(torch.cat([s_past, s_new], dim=-1), dim=-1)
        out = p[..., :T] @ past_v + p[..., T:] @ v  # [B, Hkv, G*P, Dh]
        out = out.reshape(B, self.n_heads, P, Dh).transpose(1, 2).reshape(B, P, self.n_heads * Dh)
        return self.o_proj(out), k, v


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, positions, past_k, past_v, past_len):
        h, k, v = self.attn(self.attn_norm(x), positions, past_k, past_v, past_len)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), k, v


class Transformer(nn.Module):
    """A stack of blocks and a final norm; embeddings and heads belong to the caller."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, positions, past_k: list, past_v: list, past_len):
        """Run `x` [B, P, D] at `positions` [B, P] over per-layer caches.

        Returns:
            (hidden [B, P, D] after the final norm, new_k list, new_v list),
            each new entry [B, Hkv, P, Dh].
        """
        new_k, new_v = [], []
        for layer, pk, pv in zip(self.layers, past_k, past_v):
            x, k, v = layer(x, positions, pk, pv, past_len)
            new_k.append(k)
            new_v.append(v)
        return self.norm(x), new_k, new_v

    def empty_cache(self, batch: int, device=None) -> tuple[list, list]:
        """Per-layer caches with T = 0, for a call with no past."""
        c = self.cfg
        z = torch.zeros(batch, c.n_kv_heads, 0, c.head_dim, device=device)
        return [z] * c.n_layers, [z] * c.n_layers


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Random init that keeps the context audible: normal(0, std), but query / key
    projections at 1/sqrt(dim) so attention is sharp rather than uniform.

    With GPT-2's small q/k and depth-scaled residual projections, a random-weight
    model's greedy loop ignores its prompt and falls into a fixed point; with these
    scales the text, the voice and the acoustic prompt all change the codes
    (checked over several seeds), which is what the engine's tests need to see.
    """
    for name, p in module.named_parameters():
        if p.dim() < 2:
            continue
        s = 1.0 / math.sqrt(p.shape[1]) if name.endswith(("q_proj.weight", "k_proj.weight")) else std
        nn.init.normal_(p, 0.0, s)
