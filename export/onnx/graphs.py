"""The reference family's graph roles: its stacks as parts (`stack.py`), its codec and speaker
encoder as flat-signature wrappers of `TTSModel` for ONNX export.

The tensor names, dims and KV contract come from `spec.py` and `stack.py`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.model import TTSModel
from cadenza.engine.contract import text as tok

from .spec import FLOAT, INT, GraphSpec, TensorSpec
from .stack import BackboneParts, DepthParts, with_null_row


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


def reference_parts(model: TTSModel) -> tuple[BackboneParts, DepthParts | None]:
    """The backbone and depth decoder of `model` as the exporter's parts.

    Backbone table rows: codebook k's code c at `k*C + c`, text token t at `K*C + t` with the
    voice projection's bias folded in (the VOICE token's row is the bias alone, so the VOICE
    position is exactly `voice_proj(voice)`), then the null row. Depth table rows: codebook p's
    code c at `p*C + c` (position p's input), then the null row.
    """
    cfg, bb = model.cfg, model.backbone
    K, C = cfg.n_codebooks, cfg.codebook_size
    bias = bb.voice_proj.bias.detach().float()
    text = bb.text_emb.weight.detach().float() + bias
    text[tok.VOICE] = bias
    table = with_null_row(torch.cat([bb.audio_emb.weight.detach().float(), text]))
    backbone = BackboneParts(bb.transformer, table, bb.head.weight,
                             {"slots": K, "text_offset": K * C, "code_offsets": [k * C for k in range(K)],
                              "null_row": table.shape[0] - 1},
                             voice_proj=bb.voice_proj.weight, hidden=model.depth is not None)
    if model.depth is None:
        return backbone, None
    d = model.depth
    dtable = with_null_row(d.code_emb.weight)
    depth = DepthParts(d.transformer, dtable, d.in_proj.weight, d.heads,
                       {"offsets": [p * C for p in range(K - 1)], "null_row": dtable.shape[0] - 1}, prime=0)
    return backbone, depth


def codec_specs(model: TTSModel) -> list[GraphSpec]:
    """The codec (decode with carried state, encode) and the speaker encoder (example inputs: batch 2)."""
    cfg = model.cfg
    K, C, hop, B = cfg.n_codebooks, cfg.codebook_size, cfg.codec.hop, 2
    specs = []
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
