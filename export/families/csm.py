"""CSM (sesame/csm-1b): a Llama backbone, a depth decoder over 32 codebooks, the Mimi codec.

Loaded with `transformers.CsmForConditionalGeneration` (Mimi's weights are inside the
checkpoint), exported to the `depth` token layout:

- prompt: `[128000] + tok("[{speaker}]{text}") + [128001]`; a voice is a speaker id, or a
  context segment (its transcript's prompt, then its Mimi frames, then an all-zero frame);
- a frame: codebook 0 from the backbone head on the last hidden state; the depth decoder
  takes the backbone hidden (through `inputs_embeds_projector`) at its position 0, then
  codebook k-1's code at position k and predicts codebook k with head k-1 (one priming
  position); the next backbone input is the sum of the K code embeddings (codebook k
  offset by k x vocab); end of speech is a frame of K zeros;
- every codebook is restricted to Mimi's codebook size (the model's vocab, 2051, is larger);
- Mimi streams exactly with carried state (conv contexts, the transformer's K/V window,
  the upsampler tail).
"""
from __future__ import annotations

import torch

from ..onnx.spec import FLOAT, INT, GraphSpec, TensorSpec
from ..onnx.stack import BackboneParts, DepthParts, with_null_row
from . import llama
from .checkpoint import CheckpointError, read_config, require_architecture, require_files, resolve
from .mimi import MimiCodeEncoder, MimiStreamingDecoder

FAMILY = "csm"
BOS, EOS_TEXT = 128000, 128001
MAX_AUDIO_FRAMES = 1125  # the reference generator's 90 s


def load(checkpoint: str, codec: str | None = None):
    """(CsmForConditionalGeneration, tokenizer.json path, its Mimi model)."""
    from transformers import CsmForConditionalGeneration

    if codec is not None:
        raise CheckpointError("CSM's codec (Mimi) is inside its checkpoint; drop --codec")
    d = resolve(checkpoint, "the CSM checkpoint")
    cfg = read_config(d, "the CSM checkpoint")
    require_architecture(cfg, "CsmForConditionalGeneration", "the CSM checkpoint", d)
    require_files(d, "the CSM checkpoint", "tokenizer.json", "model.safetensors|model.safetensors.index.json")
    model = CsmForConditionalGeneration.from_pretrained(str(d), torch_dtype=torch.float32).eval()
    c, mimi = model.config, model.codec_model
    if c.num_codebooks > mimi.config.num_quantizers or mimi.config.codebook_size > c.vocab_size:
        raise CheckpointError(f"the checkpoint's Mimi ({mimi.config.num_quantizers} codebooks of "
                              f"{mimi.config.codebook_size}) does not fit its model ({c.num_codebooks} codebooks "
                              f"of {c.vocab_size} ids)")
    return model, d / "tokenizer.json", mimi


def parts(model, max_seq_len: int) -> tuple[BackboneParts, DepthParts]:
    """The backbone and the depth decoder as the exporter's parts.

    Backbone table rows: codebook k's code c at `k*V + c` (the family's audio offsets), text token
    t at `K*V + t`, then the null row. Depth: position 0 takes the backbone hidden through
    `inputs_embeds_projector` (the null row adds nothing); position k >= 1 takes codebook k-1's
    code, whose row of the table is its embedding already projected (the projector is linear
    and has no bias); head k-1.
    """
    c = model.config
    K, V = c.num_codebooks, c.vocab_size
    audio = model.backbone_model.embed_tokens
    offsets = audio.audio_tokens_offsets.detach().tolist()
    if offsets != [k * V for k in range(K)]:
        raise CheckpointError(f"the checkpoint's audio offsets {offsets[:3]}... are not k x {V}")
    body = llama.from_hf(model.backbone_model, c, max_seq_len)
    table = with_null_row(torch.cat([audio.embed_audio_tokens.weight.detach().float(),
                                     model.embed_text_tokens.weight.detach().float()]))
    backbone = BackboneParts(body, table, model.lm_head.weight,
                             {"slots": K, "text_offset": K * V, "code_offsets": offsets, "null_row": table.shape[0] - 1},
                             hidden=True)
    d = model.depth_decoder
    proj = d.model.inputs_embeds_projector.weight.detach().float()  # [Dd, D]
    if getattr(d.model.inputs_embeds_projector, "bias", None) is not None:
        raise CheckpointError("the depth decoder's inputs_embeds_projector has a bias; Cadenza folds it as linear")
    with torch.no_grad():
        dtable = with_null_row(d.model.embed_tokens.weight.detach().float() @ proj.t())
    dbody = llama.from_hf(d.model, d.config, d.config.max_position_embeddings)
    depth = DepthParts(dbody, dtable, proj, d.codebooks_head.weight.detach(),
                       {"offsets": [None] + [(k - 1) * V for k in range(1, K)], "null_row": dtable.shape[0] - 1},
                       prime=1)
    return backbone, depth


def codec_specs(model, mimi) -> list[GraphSpec]:
    """Mimi's streaming decoder (state in, state out) and its encoder (for context segments)."""
    K = model.config.num_codebooks
    dec = MimiStreamingDecoder(mimi).eval()
    hop = dec.samples_per_frame
    st_in, st_out, state, example = [], [], [], []
    for name, shape, dtype in dec.state_specs():
        t = INT if dtype == torch.int64 else FLOAT
        st_in.append(TensorSpec(f"state.{name}", t, ["batch", *shape]))
        st_out.append(TensorSpec(f"new_state.{name}", t, ["batch", *shape]))
        state.append({"input": f"state.{name}", "output": f"new_state.{name}", "shape": list(shape), "dtype": t})
    example = dec.zero_state(1)
    decode = GraphSpec(
        "codec_decode", dec, [TensorSpec("codes", INT, ["batch", K, "frames"]), *st_in],
        [TensorSpec("pcm", FLOAT, ["batch", f"frames*{hop}"]), *st_out],
        (torch.randint(0, mimi.config.codebook_size, (1, K, 3)), *example), state=state)
    enc = MimiCodeEncoder(mimi, K).eval()
    encode = GraphSpec(
        "codec_encode", enc, [TensorSpec("pcm", FLOAT, ["batch", "samples"])],
        [TensorSpec("codes", INT, ["batch", K, f"samples/{hop}"])], (torch.randn(1, 3 * hop) * 0.1,))
    return [decode, encode]


def blocks(model, tokenizer_file: str, max_seq_len: int, window: tuple[int, int]) -> dict:
    """The manifest blocks of a CSM bundle."""
    c, mimi = model.config, model.codec_model.config
    b, d = llama.config_of(c, max_seq_len), llama.config_of(c.depth_decoder_config, c.num_codebooks)
    K, C = c.num_codebooks, mimi.codebook_size
    hop = int(mimi.sampling_rate / mimi.frame_rate)
    constants = {"sample_rate": mimi.sampling_rate, "hop": hop, "frame_rate": mimi.sampling_rate / hop,
                 "n_codebooks": K, "codebook_size": C, "speaker_dim": 0, "max_seq_len": max_seq_len,
                 "backbone_dim": b.dim, "backbone_layers": b.n_layers, "kv_heads": b.n_kv_heads,
                 "head_dim": b.head_dim, "depth_layers": d.n_layers, "depth_kv_heads": d.n_kv_heads,
                 "depth_head_dim": d.head_dim}
    layout = {"kind": "depth", "tokens_per_frame": 1, "logits_offset": 0, "logits_size": c.vocab_size,
              "allowed": [[0, C]] * K, "eos": "zero_frame", "depth_prime": 1}
    prompt = {"pieces": [["ids", [BOS]], ["text", "[{voice}]{text}", "[0]{text}"], ["ids", [EOS_TEXT]]],
              "voice_kind": "speaker", "builtin_voices": ["0", "1"], "default_voice": "0"}
    length = {"chars_per_second": 14.0, "min_factor": 0.0, "max_factor": 3.0, "extra": 12,
              "max_frames": MAX_AUDIO_FRAMES}
    return {"constants": constants, "layout": layout, "prompt": prompt, "length": length,
            "codec": {"kind": "stateful"}, "sampling": {"temperature": 0.9, "top_k": 50},
            "tokenizer": {"type": "tokenizers", "file": tokenizer_file}}


def source(checkpoint: str, codec: str | None, model) -> dict:
    return {"checkpoint": str(checkpoint), "architecture": "CsmForConditionalGeneration",
            "config": model.config.to_dict()}
