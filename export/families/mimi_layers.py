"""Streaming building blocks over transformers' Mimi submodules (explicit state in, state out).

Every block holds references to the transformers modules (weights are shared, nothing copied)
and maps `(x, *state) -> (y, *next_state)` with plain tensor ops, so a whole decoder made of them
traces to ONNX with dynamic batch and length.

    StreamConv1d         MimiConv1d (causal, stride 1): state = last (k-1)*dilation inputs.
    StreamConvTranspose  MimiConvTranspose1d (causal, trim right): state = overlap tail of
                         k - stride outputs (bias not included; added to emitted samples).
    StreamResBlock       MimiResnetBlock: states of its convs.
    StreamTransformer    MimiTransformerModel with a sliding window: state = per-layer K/V of
                         the last `sliding_window - 1` positions (post-RoPE) + position counter.

Depends only on torch (the wrapped modules come from transformers' modeling_mimi); used by
`mimi.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StreamConv1d(nn.Module):
    """Causal stride-1 conv with its left context carried as state.

    Args:
        mimi_conv: a transformers `MimiConv1d` (causal, stride 1, pad_mode constant).
    """

    def __init__(self, mimi_conv: nn.Module):
        super().__init__()
        conv = mimi_conv.conv
        if conv.stride[0] != 1 or not mimi_conv.causal or mimi_conv.pad_mode != "constant":
            raise ValueError("StreamConv1d needs a causal, stride-1, zero-padded MimiConv1d")
        self.conv = conv
        self.context = (conv.kernel_size[0] - 1) * conv.dilation[0]

    def state_shape(self) -> tuple[int, ...] | None:
        """Per-row state shape [C_in, context], or None when the conv needs no context."""
        return (self.conv.in_channels, self.context) if self.context > 0 else None

    def forward(self, x: torch.Tensor, *state: torch.Tensor):
        """x [B, C, T], state [B, C, P] -> (y [B, C_out, T], next_state [B, C, P]) or (y,)."""
        if self.context == 0:
            return (self.conv(x),)
        full = torch.cat([state[0], x], dim=-1)  # [B, C, P + T]
        return self.conv(full), full[..., -self.context:]


class StreamConvTranspose(nn.Module):
    """Causal transposed conv (all trimming on the right) with its overlap tail as state.

    Args:
        mimi_convtr: a transformers `MimiConvTranspose1d` with trim_right_ratio 1.0.
    """

    def __init__(self, mimi_convtr: nn.Module):
        super().__init__()
        conv = mimi_convtr.conv
        if mimi_convtr.padding_left != 0 or not mimi_convtr.causal:
            raise ValueError("StreamConvTranspose needs a causal MimiConvTranspose1d trimmed right")
        self.conv = conv
        self.stride = conv.stride[0]
        self.tail = conv.kernel_size[0] - self.stride
        if self.tail <= 0:
            raise ValueError("kernel_size must exceed stride")

    def state_shape(self) -> tuple[int, ...]:
        """Per-row state shape [C_out, kernel - stride]."""
        return (self.conv.out_channels, self.tail)

    def forward(self, x: torch.Tensor, tail: torch.Tensor):
        """x [B, C, T], tail [B, C_out, P] -> (y [B, C_out, T*stride], next_tail [B, C_out, P])."""
        c = self.conv
        full = F.conv_transpose1d(x, c.weight, None, self.stride, groups=c.groups)  # [B, Co, Ts+P]
        head = full[..., :self.tail] + tail  # [B, Co, P]
        full = torch.cat([head, full[..., self.tail:]], dim=-1)  # [B, Co, T*s + P]
        y = full[..., :-self.tail]  # [B, Co, T*s]
        if c.bias is not None:
            y = y + c.bias[:, None]
        return y, full[..., -self.tail:]


class StreamResBlock(nn.Module):
    """SEANet residual block: ELU -> conv -> ELU -> conv, plus the shortcut.

    Args:
        mimi_block: a transformers `MimiResnetBlock`.
    """

    def __init__(self, mimi_block: nn.Module):
        super().__init__()
        self.steps = nn.ModuleList(
            StreamConv1d(m) if hasattr(m, "conv") else m for m in mimi_block.block
        )
        short = mimi_block.shortcut
        self.shortcut = StreamConv1d(short) if hasattr(short, "conv") else None
        self.convs = [m for m in self.steps if isinstance(m, StreamConv1d)]
        if self.shortcut is not None:
            self.convs.append(self.shortcut)

    def state_shapes(self) -> list[tuple[int, ...]]:
        """Per-row shapes of this block's states, in consumption order."""
        return [s for s in (c.state_shape() for c in self.convs) if s is not None]

    def forward(self, x: torch.Tensor, *states: torch.Tensor):
        """x [B, C, T], states -> (y [B, C, T], *next_states)."""
        it, nxt, h = iter(states), [], x
        for step in self.steps:
            h = _run_conv(step, h, it, nxt) if isinstance(step, StreamConv1d) else step(h)
        res = _run_conv(self.shortcut, x, it, nxt) if self.shortcut is not None else x
        return (res + h, *nxt)


def _run_conv(conv: StreamConv1d, x: torch.Tensor, states, out: list) -> torch.Tensor:
    """Apply a StreamConv1d, pulling its state from `states` and appending the next one to `out`."""
    if conv.state_shape() is None:
        return conv(x)[0]
    y, nxt = conv(x, next(states))
    out.append(nxt)
    return y


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama-style rotary embedding. x [B, H, T, D], cos/sin [B, 1, T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class StreamTransformer(nn.Module):
    """Mimi's sliding-window transformer with a fixed-size K/V window as explicit state.

    Query at absolute position p attends keys at positions p - window + 1 .. p (transformers'
    `sliding_window_overlay`: kv > q - window), so the state holds the last S = window - 1
    positions. RoPE (default type) uses absolute positions, carried per row in `pos` [B].

    Args:
        mimi_transformer: a transformers `MimiTransformerModel`.
    """

    def __init__(self, mimi_transformer: nn.Module):
        super().__init__()
        cfg = mimi_transformer.config
        self.layers = mimi_transformer.layers
        self.rotary = mimi_transformer.rotary_emb
        if self.rotary.rope_type != "default":
            raise ValueError("only default RoPE is supported (Mimi uses it)")
        self.window = int(cfg.sliding_window)
        self.cache_len = self.window - 1
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim

    def state_shapes(self) -> list[tuple[tuple[int, ...], torch.dtype]]:
        """Per-row (shape, dtype) of k_cache, v_cache [L, H_kv, S, D] and pos []."""
        kv = (len(self.layers), self.kv_heads, self.cache_len, self.head_dim)
        return [(kv, torch.float32), (kv, torch.float32), ((), torch.int64)]

    def rotary_cos_sin(self, positions: torch.Tensor):
        """positions [B, T] int64 -> cos, sin [B, 1, T, D] (MimiRotaryEmbedding arithmetic)."""
        freqs = positions[..., None].float() * self.rotary.inv_freq.float()  # [B, T, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [B, T, D]
        scale = self.rotary.attention_scaling
        return (emb.cos() * scale).unsqueeze(1), (emb.sin() * scale).unsqueeze(1)

    def window_mask(self, pos: torch.Tensor, steps: int | torch.Tensor) -> torch.Tensor:
        """Allowed (query, key) pairs: [B, 1, T, S + T] bool.

        Keys are the S cached positions pos-S .. pos-1 followed by the T new ones.
        """
        t_idx = torch.arange(steps, device=pos.device)  # [T]
        k_idx = torch.arange(self.cache_len + steps, device=pos.device) - self.cache_len  # [S+T]
        q_pos = pos[:, None, None] + t_idx[None, :, None]  # [B, T, 1]
        k_pos = pos[:, None, None] + k_idx[None, None, :]  # [B, 1, S+T]
        ok = (k_pos >= 0) & (k_pos <= q_pos) & (k_pos > q_pos - self.window)  # [B, T, S+T]
        return ok.unsqueeze(1)

    def repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H_kv, L, D] -> [B, H, L, D] (each kv head repeated for its query group)."""
        rep = self.heads // self.kv_heads
        if rep == 1:
            return x
        b, _, length, d = x.shape
        return x[:, :, None].expand(b, self.kv_heads, rep, length, d).reshape(b, self.heads, length, d)

    def attend(self, layer, h, cos, sin, mask, k_cache, v_cache):
        """One attention block. h [B, T, C]; caches [B, H_kv, S, D] -> (out, next_k, next_v)."""
        attn = layer.self_attn
        b, t = h.shape[0], h.shape[1]
        q = attn.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = attn.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k_all = torch.cat([k_cache, k], dim=2)  # [B, H_kv, S+T, D]
        v_all = torch.cat([v_cache, v], dim=2)
        kr, vr = self.repeat_kv(k_all), self.repeat_kv(v_all)  # [B, H, S+T, D]
        scores = torch.matmul(q, kr.transpose(2, 3)) * attn.scaling  # [B, H, T, S+T]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, vr).transpose(1, 2).reshape(b, t, -1)  # [B, T, H*D]
        s = self.cache_len
        return attn.o_proj(out), k_all[:, :, -s:], v_all[:, :, -s:]

    def forward(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                pos: torch.Tensor):
        """x [B, T, C]; caches [B, L, H_kv, S, D]; pos [B] int64 -> (y, next_k, next_v, next_pos)."""
        steps = x.shape[1]
        positions = pos[:, None] + torch.arange(steps, device=x.device)[None, :]  # [B, T]
        cos, sin = self.rotary_cos_sin(positions)
        mask = self.window_mask(pos, steps)
        next_k, next_v = [], []
        for i, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            a, nk, nv = self.attend(layer, h, cos, sin, mask, k_cache[:, i], v_cache[:, i])
            x = x + layer.self_attn_layer_scale(a)
            x = x + layer.mlp_layer_scale(layer.mlp(layer.post_attention_layernorm(x)))
            next_k.append(nk)
            next_v.append(nv)
        return x, torch.stack(next_k, dim=1), torch.stack(next_v, dim=1), pos + steps
