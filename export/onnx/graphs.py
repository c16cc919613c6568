"""The graph roles: flat-signature wrappers of the model for ONNX export.

Each `GraphSpec` names its inputs and outputs (the manifest copies them, so
the engine never hard-codes a tensor name), their symbolic dims and dtypes,
the per-layer KV-cache tensors and the streaming state tensors.

KV contract: per layer `l`, the step graphs read `past_key.{l}` /
`past_value.{l}` [B, Hkv, T, Dh] (read only, masked by each row's valid
length) and return only `new_key.{l}` / `new_value.{l}` [B, Hkv, P, Dh].
Per-layer inputs over a layer-major cache ([L, 2, S, Hkv, T, Dh]) make a batch
of the first B slots a zero-copy contiguous view, and no graph slices a
whole-cache tensor (which ONNX Runtime would copy every step).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..model.model import TTSModel

INT, FLOAT = "int64", "float32"


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list  # ints, symbolic dim names, or "name*N" / "name/N" derived from one

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class GraphSpec:
    role: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example: tuple
    kv: dict | None = None  # {"layers", "past_key", "past_value", "new_key", "new_value", "kv_heads", "head_dim"}
    state: list[dict] = field(default_factory=list)  # [{"input", "output", "shape"}]


def _kv_specs(n_layers: int, hkv: int, dh: int, t_dim: str, p_dim):
    past, new = [], []
    for l in range(n_layers):
        for kind in ("key", "value"):
            past.append(TensorSpec(f"past_{kind}.{l}", FLOAT, ["batch", hkv, t_dim, dh]))
            new.append(TensorSpec(f"new_{kind}.{l}", FLOAT, ["batch", hkv, p_dim, dh]))
    kv = {"layers": n_layers, "kv_heads": hkv, "head_dim": dh, "past_key": "past_key.%d",
          "past_value": "past_value.%d", "new_key": "new_key.%d", "new_value": "new_value.%d"}
    return past, new, kv


def _pairs(flat):
    return list(flat[0::2]), list(flat[1::2])


def _interleave(ks, vs):
    return [t for kv in zip(ks, vs) for t in kv]


class PrefillGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.bb = model.backbone

    def forward(self, tokens, voice, lengths, start, *past):
        P = tokens.shape[1]
        positions = start[:, None] + torch.arange(P)[None, :]  # [B, P]
        pk, pv = _pairs(past)
        h, nk, nv = self.bb(self.bb.embed_prompt(tokens, voice), positions, pk, pv, start)  # [B, P, D]
        idx = (lengths - 1)[:, None, None].expand(-1, 1, h.shape[-1])
        last = h.gather(1, idx)[:, 0]  # [B, D]
        return (self.bb.head(last), last, *_interleave(nk, nv))


class StepGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.bb = model.backbone

    def forward(self, codes, positions, *past):
        pk, pv = _pairs(past)
        h, nk, nv = self.bb(self.bb.embed_codes(codes), positions[:, None], pk, pv, positions)
        last = h[:, 0]  # [B, D]
        return (self.bb.head(last), last, *_interleave(nk, nv))


class DepthGraph(nn.Module):
    def __init__(self, model: TTSModel):
        super().__init__()
        self.depth = model.depth

    def forward(self, hidden, prev_code, depth_pos, *past):
        pk, pv = _pairs(past)
        logits, nk, nv = self.depth(hidden, prev_code, depth_pos, pk, pv)
        return (logits, *_interleave(nk, nv))


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
    past, new, kv = _kv_specs(b.n_layers, b.n_kv_heads, b.head_dim, "cache_len", "prompt_len")
    cache = [torch.randn(B, b.n_kv_heads, T, b.head_dim) for _ in past]
    specs = [GraphSpec(
        "backbone_prefill", PrefillGraph(model),
        [TensorSpec("tokens", INT, ["batch", "prompt_len"]), TensorSpec("voice", FLOAT, ["batch", cfg.speaker_dim]),
         TensorSpec("lengths", INT, ["batch"]), TensorSpec("start", INT, ["batch"]), *past],
        [TensorSpec("logits", FLOAT, ["batch", C + 1]), TensorSpec("hidden", FLOAT, ["batch", b.dim]), *new],
        (torch.randint(0, 256, (B, P)), torch.randn(B, cfg.speaker_dim), torch.tensor([P, 3]),
         torch.tensor([2, 4]), *cache), kv)]
    past, new, kv = _kv_specs(b.n_layers, b.n_kv_heads, b.head_dim, "cache_len", 1)
    specs.append(GraphSpec(
        "backbone_step", StepGraph(model),
        [TensorSpec("codes", INT, ["batch", K]), TensorSpec("positions", INT, ["batch"]), *past],
        [TensorSpec("logits", FLOAT, ["batch", C + 1]), TensorSpec("hidden", FLOAT, ["batch", b.dim]), *new],
        (torch.randint(0, C, (B, K)), torch.tensor([3, 6]), *cache), kv))
    if model.depth is not None:
        d = cfg.depth
        past, new, kv = _kv_specs(d.n_layers, d.n_kv_heads, d.head_dim, "depth_len", 1)
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
