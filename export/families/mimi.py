"""Mimi (CSM's codec) for export: an exact streaming decoder with explicit state, and the encoder.

`MimiStreamingDecoder` (codes -> 24 kHz PCM) and `MimiCodeEncoder` (PCM -> codes, for the
audio context segments of CSM voice prompts) reuse the weights of transformers' `MimiModel`
and trace to ONNX with a dynamic batch and length.

The decoder:

`MimiStreamingDecoder(mimi_model)` reuses the weights of a transformers `MimiModel` (held by
reference) and decodes any split of a code stream into chunks of F >= 1 frames so that the
concatenated output equals `MimiModel.decode` of all the codes at once (to float rounding). Mimi's
decoder path is fully causal, so there is no look-ahead: F frames in -> F * 1920 samples out.

State (all rows independent; zeros = start of a stream; names in `state_names()` order):
    upsample_tail    [B, C, 2]              overlap tail of the stride-2 transposed conv
    attn_k, attn_v   [B, L, H_kv, S, D]     K/V (post-RoPE) of the last S = sliding_window - 1
                                            transformer positions, oldest first
    attn_pos         [B] int64              transformer positions consumed so far (= 2 * frames)
    seanet_<i>...    [B, C_i, P_i]          conv left contexts / transposed-conv tails of the
                                            SEANet decoder, in layer order

The encoder: `MimiModel.encode` does not trace as is (transformers' mask construction and
`torch.cdist`); `MimiCodeEncoder` reproduces it op for op on the same weights: causal SEANet
convs with the same padding, the sliding-window transformer from position 0, the stride-2
downsample, and the split residual VQ with the nearest centroid by the same augmented matmul
`torch.cdist` uses. Frames F = ceil(N / 1920).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.mimi.modeling_mimi import MimiConv1d, MimiConvTranspose1d, MimiResnetBlock

from .mimi_layers import StreamConv1d, StreamConvTranspose, StreamResBlock, StreamTransformer


def codebook_table(codebook: nn.Module) -> torch.Tensor:
    """Centroids of a `MimiEuclideanCodebook` (its `embed` property, recomputed): [N, D]."""
    return codebook.embed_sum / codebook.cluster_usage.clamp(min=codebook.epsilon)[:, None]


class MimiDequantizer(nn.Module):
    """Codes [B, K, F] -> latents [B, C, F], as `MimiSplitResidualVectorQuantizer.decode`.

    Args:
        split_rvq: `mimi_model.quantizer`.
    """

    def __init__(self, split_rvq: nn.Module):
        super().__init__()
        self.semantic = split_rvq.semantic_residual_vector_quantizer
        self.acoustic = split_rvq.acoustic_residual_vector_quantizer
        self.n_semantic = split_rvq.num_semantic_quantizers

    @staticmethod
    def decode_rvq(rvq: nn.Module, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, k, F] through one RVQ -> [B, C, F]."""
        total = None
        for i in range(codes.shape[1]):
            emb = nn.functional.embedding(codes[:, i], codebook_table(rvq.layers[i].codebook))
            total = emb if total is None else total + emb  # [B, F, D]
        total = total.permute(0, 2, 1)  # [B, D, F]
        return rvq.output_proj(total) if rvq.output_proj is not None else total

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        latents = self.decode_rvq(self.semantic, codes[:, :self.n_semantic])  # [B, C, F]
        if codes.shape[1] > self.n_semantic:
            latents = latents + self.decode_rvq(self.acoustic, codes[:, self.n_semantic:])
        return latents


def wrap_seanet_layer(layer: nn.Module) -> nn.Module:
    """Streaming counterpart of one `MimiDecoder.layers` entry (stateless layers unchanged)."""
    if isinstance(layer, MimiConv1d):
        return StreamConv1d(layer)
    if isinstance(layer, MimiConvTranspose1d):
        return StreamConvTranspose(layer)
    if isinstance(layer, MimiResnetBlock):
        return StreamResBlock(layer)
    return layer


def layer_state_shapes(layer: nn.Module) -> list[tuple[int, ...]]:
    """Per-row state shapes of a wrapped SEANet layer."""
    if isinstance(layer, StreamResBlock):
        return layer.state_shapes()
    if isinstance(layer, (StreamConv1d, StreamConvTranspose)):
        shape = layer.state_shape()
        return [shape] if shape is not None else []
    return []


class MimiStreamingDecoder(nn.Module):
    """Mimi codes -> PCM, one chunk at a time, with all streaming state explicit.

    Args:
        mimi_model: a transformers `MimiModel` (e.g. `CsmForConditionalGeneration.codec_model`).

    Forward:
        codes: [B, K, F] int64 (K <= num_quantizers, F >= 1).
        *states: tensors in `state_names()` order (see module docstring), e.g. `zero_state(B)`.

    Returns:
        (pcm [B, F * 1920] float32, *next_states) with next_states in the same order.
    """

    def __init__(self, mimi_model: nn.Module):
        super().__init__()
        dec = mimi_model.decoder
        self.dequantizer = MimiDequantizer(mimi_model.quantizer)
        self.upsample = StreamConvTranspose(dec.upsample) if dec.upsample is not None else None
        self.transformer = StreamTransformer(dec.decoder_transformer)
        self.seanet = nn.ModuleList(wrap_seanet_layer(m) for m in dec.decoder_seanet.layers)
        self.samples_per_frame = int(mimi_model.config.frame_size)

    def state_specs(self) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """(name, per-row shape, dtype) of every state tensor, in forward order."""
        specs = []
        if self.upsample is not None:
            specs.append(("upsample_tail", self.upsample.state_shape(), torch.float32))
        names = ("attn_k", "attn_v", "attn_pos")
        specs += [(n, s, d) for n, (s, d) in zip(names, self.transformer.state_shapes())]
        for i, layer in enumerate(self.seanet):
            shapes = layer_state_shapes(layer)
            specs += [(f"seanet_{i}_{j}", s, torch.float32) for j, s in enumerate(shapes)]
        return specs

    def state_names(self) -> list[str]:
        """Names of the state tensors, in forward order."""
        return [name for name, _, _ in self.state_specs()]

    def state_shapes(self, batch: int | str = "B") -> dict[str, tuple[tuple, torch.dtype]]:
        """name -> (full shape with the batch axis first, dtype)."""
        return {name: ((batch, *shape), dtype) for name, shape, dtype in self.state_specs()}

    def zero_state(self, batch: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """State of `batch` fresh streams (all zeros, positions 0)."""
        return [torch.zeros((batch, *shape), dtype=dtype, device=device)
                for _, shape, dtype in self.state_specs()]

    def run_seanet(self, x: torch.Tensor, states: list[torch.Tensor]):
        """SEANet decoder on x [B, C, T'] -> (audio [B, 1, T' * hop'], next states)."""
        it, nxt = iter(states), []
        for layer in self.seanet:
            n = len(layer_state_shapes(layer))
            if isinstance(layer, (StreamConv1d, StreamConvTranspose, StreamResBlock)):
                out = layer(x, *[next(it) for _ in range(n)])
                x, new = out[0], list(out[1:])
                nxt += new
            else:
                x = layer(x)
        return x, nxt

    def forward(self, codes: torch.Tensor, *states: torch.Tensor):
        states = list(states)
        nxt = []
        x = self.dequantizer(codes)  # [B, C, F]
        if self.upsample is not None:
            x, tail = self.upsample(x, states.pop(0))  # [B, C, 2F]
            nxt.append(tail)
        k, v, pos = states[:3]
        h, k, v, pos = self.transformer(x.transpose(1, 2), k, v, pos)  # [B, 2F, C]
        nxt += [k, v, pos]
        audio, seanet_next = self.run_seanet(h.transpose(1, 2), states[3:])  # [B, 1, N]
        return (audio.squeeze(1), *nxt, *seanet_next)


# --- the encoder ---------------------------------------------------------------------
class PaddedConv1d(nn.Module):
    """Offline causal `MimiConv1d` (any stride / dilation / pad mode) with traceable padding.

    Args:
        mimi_conv: a transformers `MimiConv1d` with `causal=True`.
    """

    def __init__(self, mimi_conv: nn.Module):
        super().__init__()
        if not mimi_conv.causal:
            raise ValueError("only causal MimiConv1d is supported")
        self.conv = mimi_conv.conv
        self.stride = self.conv.stride[0]
        kernel = (self.conv.kernel_size[0] - 1) * self.conv.dilation[0] + 1
        self.left = kernel - self.stride
        self.mode = "replicate" if mimi_conv.pad_mode == "replicate" else "constant"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] -> [B, C_out, ceil(T / stride)]."""
        extra = (self.stride - x.shape[-1] % self.stride) % self.stride
        return self.conv(F.pad(x, (self.left, extra), mode=self.mode))


class OfflineResBlock(nn.Module):
    """`MimiResnetBlock` with `PaddedConv1d` convs."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.steps = nn.ModuleList(PaddedConv1d(m) if isinstance(m, MimiConv1d) else m for m in block.block)
        sc = block.shortcut
        self.shortcut = PaddedConv1d(sc) if isinstance(sc, MimiConv1d) else sc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for step in self.steps:
            h = step(h)
        return self.shortcut(x) + h


def offline_layer(layer: nn.Module) -> nn.Module:
    """Traceable counterpart of one `MimiEncoder.layers` entry."""
    if isinstance(layer, MimiConv1d):
        return PaddedConv1d(layer)
    if isinstance(layer, MimiResnetBlock):
        return OfflineResBlock(layer)
    return layer


def nearest_centroid(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """argmin_j |x_i - e_j| exactly as `torch.cdist(x[None], e[None])[0].argmin(-1)`.

    Args:
        x: [N, D] vectors.
        embed: [M, D] centroids.

    Returns:
        [N] int64.
    """
    x1, x2 = x[None], embed[None]  # [1, N, D], [1, M, D]
    x1_norm = x1.pow(2).sum(-1, keepdim=True)  # [1, N, 1]
    x2_norm = x2.pow(2).sum(-1, keepdim=True)  # [1, M, 1]
    a = torch.cat([x1.mul(-2), x1_norm, torch.ones_like(x1_norm)], dim=-1)  # [1, N, D+2]
    b = torch.cat([x2, torch.ones_like(x2_norm), x2_norm], dim=-1)  # [1, M, D+2]
    dist = a.matmul(b.transpose(1, 2)).clamp_min(0).sqrt()  # [1, N, M]
    return dist[0].argmin(dim=-1)


def rvq_steps(rvq: nn.Module, latents: torch.Tensor, count: int):
    """Residual VQ (`MimiResidualVectorQuantizer.encode`) of latents [B, C, F], level by level.

    Yields:
        (codes [B, F] int64, residual [B, D, F] that was quantized, centroids [M, D]) per level.
    """
    residual = rvq.input_proj(latents) if rvq.input_proj is not None else latents  # [B, D, F]
    for layer in rvq.layers[:count]:
        embed = codebook_table(layer.codebook)  # [M, D]
        flat = residual.permute(0, 2, 1).reshape(-1, embed.shape[1])  # [B*F, D]
        idx = nearest_centroid(flat, embed).reshape(residual.shape[0], -1)  # [B, F]
        yield idx, residual, embed
        residual = residual - F.embedding(idx, embed).permute(0, 2, 1)


def rvq_encode(rvq: nn.Module, latents: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Codes of `rvq_steps`: count x [B, F] int64."""
    return [idx for idx, _, _ in rvq_steps(rvq, latents, count)]


class MimiCodeEncoder(nn.Module):
    """24 kHz PCM -> Mimi codes, equal to `MimiModel.encode(pcm[:, None]).audio_codes`.

    Args:
        mimi_model: a transformers `MimiModel`.
        num_codebooks: K (default: all quantizers; must be >= the semantic ones).

    Forward:
        pcm: [B, N] float32.

    Returns:
        codes: [B, K, ceil(N / 1920)] int64.
    """

    def __init__(self, mimi_model: nn.Module, num_codebooks: int | None = None):
        super().__init__()
        enc = mimi_model.encoder
        self.seanet = nn.ModuleList(offline_layer(m) for m in enc.encoder_seanet.layers)
        self.transformer = StreamTransformer(enc.encoder_transformer)
        self.downsample = PaddedConv1d(enc.downsample) if enc.downsample is not None else None
        q = mimi_model.quantizer
        self.semantic, self.acoustic = q.semantic_residual_vector_quantizer, q.acoustic_residual_vector_quantizer
        self.n_semantic = q.num_semantic_quantizers
        self.num_codebooks = num_codebooks or mimi_model.config.num_quantizers

    def latents(self, pcm: torch.Tensor) -> torch.Tensor:
        """pcm [B, N] -> encoder latents [B, C, F]."""
        x = pcm.unsqueeze(1)  # [B, 1, N]
        for layer in self.seanet:
            x = layer(x)  # -> [B, C, N / 960]
        b = x.shape[0]
        k, v, pos = (torch.zeros((b, *s), dtype=d) for s, d in self.transformer.state_shapes())
        h = self.transformer(x.transpose(1, 2), k, v, pos)[0].transpose(1, 2)  # [B, C, T]
        return self.downsample(h) if self.downsample is not None else h  # [B, C, F]

    def steps(self, pcm: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(codes [B, F], quantized residual [B, D, F], centroids [M, D]) for each of the K levels."""
        z = self.latents(pcm)
        return (list(rvq_steps(self.semantic, z, self.n_semantic))
                + list(rvq_steps(self.acoustic, z, self.num_codebooks - self.n_semantic)))

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        return torch.stack([idx for idx, _, _ in self.steps(pcm)], dim=1)  # [B, K, F]
