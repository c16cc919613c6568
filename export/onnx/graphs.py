"""The reference family's graph roles: flat-signature wrappers of `TTSModel` for ONNX export.

The tensor names, dims and KV contract come from `spec.py`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.model import TTSModel
from .spec import FLOAT, INT, GraphSpec, TensorSpec, interleave, kv_specs, pairs


class PrefillGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.bb = model.backbone

    def forward(self, tokens, voice, lengths, start, *past):
        P = tokens.shape[1]
        positions = start[:, None] + torch.arange(P)[None, :]  # [B, P]
        pk, pv = pairs(past)
        h, nk, nv = self.bb(self.bb.embed_prompt(tokens, voice), positions, pk, pv, start)  # [B, P, D]
        idx = (lengths - 1)[:, None, None].expand(-1, 1, h.shape[-1])
        last = h.gather(1, idx)[:, 0]  # [B, D]
        return (self.bb.head(last), last, *interleave(nk, nv))


class StepGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.bb = model.backbone

    def forward(self, codes, positions, *past):
        pk, pv = pairs(past)
        h, nk, nv = self.bb(self.bb.embed_codes(codes), positions[:, None], pk, pv, positions)
        last = h[:, 0]  # [B, D]
        return (self.bb.head(last), last, *interleave(nk, nv))


class DepthGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.depth = model.depth

    def forward(self, hidden, prev_code, depth_pos, *past):
        pk, pv = pairs(past)
        logits, nk, nv = self.depth(hidden, prev_code, depth_pos, pk, pv)
        return (logits, *interleave(nk, nv))


class CodecDecodeGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.codec = model.codec

    def forward(self, codes, *states):
        pcm, new = self.codec.decode_stream(codes, list(states))
        return (pcm, *new)


class CodecEncodeGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.codec = model.codec

    def forward(self, pcm):
        return self.codec.encode(pcm)


class SpeakerGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.speaker = model.speaker

    def forward(self, pcm):
        return self.speaker(pcm)


def graph_specs(model: TTSModel) -> list[GraphSpec]:
    """Every graph role of `model`, with example inputs for tracing (batch 2)."""
    cfg = model.cfg
    b, K, C, hop = cfg.backbone, cfg.n_codebooks, cfg.codebook_size, cfg.codec.hop
    B, P, T = 2, 5, 7
    past, new, kv = kv_specs(b.n_layers, b.n_kv_heads, b.head_dim, "cache_len", "prompt_len")
    cache = [torch.randn(B, b.n_kv_heads, T, b.head_dim) for _ in past]
    specs = [GraphSpec(
        "backbone_prefill", PrefillGraph(model),
        [TensorSpec("tokens", INT, ["batch", "prompt_len"]), TensorSpec("voice", FLOAT, ["batch", cfg.speaker_dim]),
         TensorSpec("lengths", INT, ["batch"]), TensorSpec("start", INT, ["batch"]), *past],
        [TensorSpec("logits", FLOAT, ["batch", C + 1]), TensorSpec("hidden", FLOAT, ["batch", b.dim]), *new],
        (torch.randint(0, 256, (B, P)), torch.randn(B, cfg.speaker_dim), torch.tensor([P, 3]),
         torch.tensor([2, 4]), *cache), kv)]
    past, new, kv = kv_specs(b.n_layers, b.n_kv_heads, b.head_dim, "cache_len", 1)
    specs.append(GraphSpec(
        "backbone_step", StepGraph(model),
        [TensorSpec("codes", INT, ["batch", K]), TensorSpec("positions", INT, ["batch"]), *past],
        [TensorSpec("logits", FLOAT, ["batch", C + 1]), TensorSpec("hidden", FLOAT, ["batch", b.dim]), *new],
        (torch.randint(0, C, (B, K)), torch.tensor([3, 6]), *cache), kv))
    if model.depth is not None:
        d = cfg.depth
        past, new, kv = kv_specs(d.n_layers, d.n_kv_heads, d.head_dim, "depth_len", 1)
        dcache = [torch.randn(B, d.n_kv_heads, K - 1, d.head_dim) for _ in past]
        specs.append(GraphSpec(
            "depth_step", DepthGraph(model),
            [TensorSpec("hidden", FLOAT, ["batch", b.dim]), TensorSpec("prev_code", INT, ["batch"]),
             TensorSpec("depth_pos", INT, [1]), *past],
            [TensorSpec("logits", FLOAT, ["batch", C]), *new],
            (torch.randn(B, b.dim), torch.randint(0, C, (B,)), torch.tensor([min(1, K - 2)]), *dcache), kv))
    shapes = model.codec.decoder.state_shapes()
    st_in = [TensorSpec(f"state.{i}", FLOAT, ["batch", c, n]) for i, (c, n) in enumerate(shapes)]
    st_out = [TensorSpec(f"new_state.{i}", FLOAT, ["batch", c, n]) for i, (c, n) in enumerate(shapes)]
    specs.append(GraphSpec(
        "codec_decode", CodecDecodeGraph(model),
        [TensorSpec("codes", INT, ["batch", K, "frames"]), *st_in],
        [TensorSpec("pcm", FLOAT, ["batch", f"frames*{hop}"]), *st_out],
        (torch.randint(0, C, (B, K, 3)), *[torch.randn(B, c, n) * 0.1 for c, n in shapes]),
        state=[{"input": i.name, "output": o.name, "shape": i.shape[1:]} for i, o in zip(st_in, st_out)]))
    specs.append(GraphSpec(
        "codec_encode", CodecEncodeGraph(model), [TensorSpec("pcm", FLOAT, ["batch", "samples"])],
        [TensorSpec("codes", INT, ["batch", K, f"samples/{hop}"])], (torch.randn(B, 3 * hop) * 0.1,)))
    specs.append(GraphSpec(
        "speaker_encode", SpeakerGraph(model), [TensorSpec("pcm", FLOAT, ["batch", "samples"])],
        [TensorSpec("embedding", FLOAT, ["batch", cfg.speaker_dim])], (torch.randn(B, 2 * hop) * 0.1,)))
    return specs
