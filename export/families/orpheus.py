"""Orpheus (canopylabs/orpheus-3b-0.1-ft): a Llama backbone emitting 7 SNAC codes per frame.

Loaded with the family's own classes (`transformers.LlamaForCausalLM`, `snac.SNAC`),
exported to the `flat` token layout:

- prompt: `[128259, 128000] + tok("{voice}: {text}") + [128009, 128260, 128261, 128257]`;
- frame position j (0..6) may emit only ids `128266 + j * 4096 + [0, 4096)`; the stop id
  128258 only at j == 0; the backbone's head is cut to the ids that can ever be sampled
  (`[128256, 156940)`: 28,684 of 156,940 rows);
- SNAC 24 kHz decodes frames of 7 codes (2048 samples, 85.3 ms) through a window of
  context frames (not causal), noise blocks off (deterministic).
"""
from __future__ import annotations

import torch

from ..onnx.spec import FLOAT, INT, GraphSpec, TensorSpec
from ..onnx.stack import BackboneParts, with_null_row
from . import llama
from .checkpoint import CheckpointError, read_config, require_architecture, require_files, resolve
from .snac import CODES_PER_FRAME, SAMPLES_PER_FRAME, SnacFrameDecoder, load_snac

FAMILY = "orpheus"
VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
BOS, EOT_ID = 128000, 128009
START_OF_SPEECH, END_OF_SPEECH = 128257, 128258
START_OF_HUMAN, END_OF_HUMAN, START_OF_AI = 128259, 128260, 128261
CUSTOM_BASE, AUDIO_BASE, CODEBOOK = 128256, 128266, 4096
DEFAULT_CODEC = "hubertsiuzdak/snac_24khz"
MAX_TOKENS = 1200  # the family's default generation budget: 171 frames


def load(checkpoint: str, codec: str | None = None):
    """(LlamaForCausalLM, tokenizer.json path, SNAC) from local directories or hub ids."""
    from transformers import LlamaForCausalLM

    d = resolve(checkpoint, "the Orpheus checkpoint")
    cfg = read_config(d, "the Orpheus checkpoint")
    require_architecture(cfg, "LlamaForCausalLM", "the Orpheus checkpoint", d)
    require_files(d, "the Orpheus checkpoint", "tokenizer.json",
                  "model.safetensors|model.safetensors.index.json|pytorch_model.bin")
    if cfg.get("vocab_size", 0) < AUDIO_BASE + CODES_PER_FRAME * CODEBOOK:
        raise CheckpointError(f"the checkpoint's vocabulary ({cfg.get('vocab_size')} ids) is too small for "
                              f"Orpheus' token map (audio ids up to {AUDIO_BASE + CODES_PER_FRAME * CODEBOOK}); "
                              "is it an Orpheus checkpoint?")
    model = LlamaForCausalLM.from_pretrained(str(d), torch_dtype=torch.float32).eval()
    snac = load_snac(codec or DEFAULT_CODEC)
    return model, d / "tokenizer.json", snac


def head_ranges() -> list[tuple[int, int]]:
    """Per frame position j, the logits columns it may sample: its 4,096 codes (at j == 0 also the stop id,
    with the 7 ids between them)."""
    first, stop = AUDIO_BASE - CUSTOM_BASE, END_OF_SPEECH - CUSTOM_BASE
    ranges = [(first + j * CODEBOOK, first + (j + 1) * CODEBOOK) for j in range(CODES_PER_FRAME)]
    ranges[0] = (min(stop, first), ranges[0][1])
    return ranges


def parts(model, max_seq_len: int) -> tuple[BackboneParts, None]:
    """The Llama backbone: rows of the table are the vocabulary's ids (one slot per position); the head
    (ids `[CUSTOM_BASE, vocab)`) cut per frame position, so a step computes the 4,096 logits it samples
    from rather than 28,684 (on Orpheus-3B the whole head is ~15% of the weights a step reads)."""
    body = llama.from_hf(model.model, model.config, max_seq_len)
    table = with_null_row(model.model.embed_tokens.weight)
    head = model.lm_head.weight.detach()[CUSTOM_BASE:]
    return BackboneParts(body, table, head, {"slots": 1, "text_offset": 0, "code_offsets": None,
                                             "null_row": table.shape[0] - 1}, heads=head_ranges()), None


def codec_specs(model, snac) -> list[GraphSpec]:
    """codec_decode: SNAC over a window of frames."""
    return [GraphSpec(
        "codec_decode", SnacFrameDecoder(snac).eval(), [TensorSpec("codes", INT, ["batch", CODES_PER_FRAME, "frames"])],
        [TensorSpec("pcm", FLOAT, ["batch", f"frames*{SAMPLES_PER_FRAME}"])],
        (torch.randint(0, CODEBOOK, (1, CODES_PER_FRAME, 4)),))]


def blocks(model, tokenizer_file: str, max_seq_len: int, window: tuple[int, int]) -> dict:
    """The manifest blocks of an Orpheus bundle."""
    c = model.config
    b = llama.config_of(c, max_seq_len)
    vocab = c.vocab_size
    constants = {"sample_rate": 24000, "hop": SAMPLES_PER_FRAME, "frame_rate": 24000 / SAMPLES_PER_FRAME,
                 "n_codebooks": CODES_PER_FRAME, "codebook_size": CODEBOOK, "speaker_dim": 0,
                 "max_seq_len": max_seq_len, "backbone_dim": b.dim, "backbone_layers": b.n_layers,
                 "kv_heads": b.n_kv_heads, "head_dim": b.head_dim, "depth_layers": 0, "depth_kv_heads": 0,
                 "depth_head_dim": 0}
    first = AUDIO_BASE - CUSTOM_BASE
    layout = {"kind": "flat", "tokens_per_frame": CODES_PER_FRAME, "logits_offset": CUSTOM_BASE,
              "logits_size": vocab - CUSTOM_BASE,
              "allowed": [[first + j * CODEBOOK, first + (j + 1) * CODEBOOK] for j in range(CODES_PER_FRAME)],
              "stop_columns": [END_OF_SPEECH - CUSTOM_BASE], "heads": [list(r) for r in head_ranges()]}
    prompt = {"pieces": [["ids", [START_OF_HUMAN, BOS]], ["text", "{voice}: {text}", "{text}"],
                         ["ids", [EOT_ID, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH]]],
              "voice_kind": "name", "builtin_voices": list(VOICES), "default_voice": None}
    length = {"chars_per_second": 14.0, "min_factor": 0.0, "max_factor": 3.0, "extra": 12,
              "max_frames": MAX_TOKENS // CODES_PER_FRAME}
    return {"constants": constants, "layout": layout, "prompt": prompt, "length": length,
            "codec": {"kind": "window", "left": window[0], "right": window[1]},
            "sampling": {"temperature": 0.6, "top_k": 0, "top_p": 0.8, "repetition_penalty": 1.3},
            "tokenizer": {"type": "tokenizers", "file": tokenizer_file}}


def source(checkpoint: str, codec: str | None, model) -> dict:
    return {"checkpoint": str(checkpoint), "codec": codec or DEFAULT_CODEC,
            "architecture": "LlamaForCausalLM", "config": model.config.to_dict()}


__all__ = ["FAMILY", "VOICES", "load", "parts", "codec_specs", "blocks", "source"]
