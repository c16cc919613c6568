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
from torch import nn

from ..onnx.spec import FLOAT, INT, GraphSpec, TensorSpec, interleave, kv_specs, pairs
from . import llama
from .checkpoint import CheckpointError, read_config, require_architecture, require_files, resolve
from .mimi import MimiCodeEncoder, MimiStreamingDecoder

FAMILY = "csm"
BOS, EOS_TEXT = 128000, 128001
MAX_AUDIO_FRAMES = 1125  # the reference generator's 90 s


class CsmBackbone(nn.Module):
    """Text embeddings, summed audio embeddings, the decoder stack, codebook 0's head."""

    def __init__(self, hf: nn.Module, max_seq_len: int):
        super().__init__()
        self.text_emb = nn.Embedding.from_pretrained(hf.embed_text_tokens.weight.detach().float())
        audio = hf.backbone_model.embed_tokens
        self.audio_emb = nn.Embedding.from_pretrained(audio.embed_audio_tokens.weight.detach().float())
        self.register_buffer("offsets", audio.audio_tokens_offsets.detach().clone(), persistent=False)  # [K]
        self.body = llama.from_hf(hf.backbone_model, hf.config, max_seq_len)
        self.head = nn.Linear(hf.config.hidden_size, hf.config.vocab_size, bias=False)
        self.head.weight.data.copy_(hf.lm_head.weight.detach().float())

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K] -> summed embeddings [B, 1, D]."""
        return self.audio_emb(codes + self.offsets).sum(1, keepdim=True)


class CsmPrefill(nn.Module):
    def __init__(self, bb: CsmBackbone):
        super().__init__()
        self.bb = bb

    def forward(self, tokens, lengths, start, *past):
        P = tokens.shape[1]
        positions = start[:, None] + torch.arange(P)[None, :]  # [B, P]
        pk, pv = pairs(past)
        h, nk, nv = self.bb.body(self.bb.text_emb(tokens), positions, pk, pv, start)  # [B, P, D]
        last = h.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, h.shape[-1]))[:, 0]  # [B, D]
        return (self.bb.head(last), last, *interleave(nk, nv))


class CsmStep(nn.Module):
    def __init__(self, bb: CsmBackbone):
        super().__init__()
        self.bb = bb

    def forward(self, codes, positions, *past):
        pk, pv = pairs(past)
        h, nk, nv = self.bb.body(self.bb.embed_codes(codes), positions[:, None], pk, pv, positions)
        last = h[:, 0]  # [B, D]
        return (self.bb.head(last), last, *interleave(nk, nv))


class CsmDepth(nn.Module):
    """One depth position: 0 takes the backbone hidden, k >= 1 codebook k-1's code; head k-1."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        d = hf.depth_decoder
        self.V = d.config.vocab_size
        self.code_emb = nn.Embedding.from_pretrained(d.model.embed_tokens.weight.detach().float())
        self.proj = nn.Linear(d.config.backbone_hidden_size, d.config.hidden_size, bias=False)
        self.proj.weight.data.copy_(d.model.inputs_embeds_projector.weight.detach().float())
        self.body = llama.from_hf(d.model, d.config, d.config.max_position_embeddings)
        self.heads = nn.Parameter(d.codebooks_head.weight.detach().float(), requires_grad=False)  # [K-1, Dd, V]

    def forward(self, hidden, prev_code, depth_pos, *past):
        """hidden [B, D], prev_code [B], depth_pos [1] -> (logits [B, V], new K/V...)."""
        pk, pv = pairs(past)
        k = (depth_pos - 1).clamp(min=0)  # [1]: the codebook of prev_code, and the head's index
        first = (depth_pos == 0)[:, None]  # [1, 1]
        x = torch.where(first, hidden, self.code_emb(prev_code + k * self.V))  # [B, D]
        pos = depth_pos.expand(hidden.shape[0])  # [B]
        h, nk, nv = self.body(self.proj(x)[:, None], pos[:, None], pk, pv, pos)  # [B, 1, Dd]
        head = self.heads.index_select(0, k)[0]  # [Dd, V]
        return (h[:, 0] @ head, *interleave(nk, nv))


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


def graph_specs(model, mimi, max_seq_len: int) -> list[GraphSpec]:
    """backbone_prefill, backbone_step, depth_step, codec_decode (stateful Mimi), codec_encode."""
    c = model.config
    K, V = c.num_codebooks, c.vocab_size
    bb, depth = CsmBackbone(model, max_seq_len).eval(), CsmDepth(model).eval()
    b, d = bb.body.cfg, depth.body.cfg
    B, P, T = 2, 5, 7
    past, new, kv = kv_specs(b.n_layers, b.n_kv_heads, b.head_dim, "cache_len", "prompt_len")
    cache = [torch.randn(B, b.n_kv_heads, T, b.head_dim) for _ in past]
    outs = [TensorSpec("logits", FLOAT, ["batch", V]), TensorSpec("hidden", FLOAT, ["batch", b.dim])]
    specs = [GraphSpec(
        "backbone_prefill", CsmPrefill(bb),
        [TensorSpec("tokens", INT, ["batch", "prompt_len"]), TensorSpec("lengths", INT, ["batch"]),
         TensorSpec("start", INT, ["batch"]), *past], [*outs, *new],
        (torch.randint(0, 1000, (B, P)), torch.tensor([P, 3]), torch.tensor([2, 4]), *cache), kv)]
    past, new, kv = kv_specs(b.n_layers, b.n_kv_heads, b.head_dim, "cache_len", 1)
    specs.append(GraphSpec(
        "backbone_step", CsmStep(bb), [TensorSpec("codes", INT, ["batch", K]), TensorSpec("positions", INT, ["batch"]),
                                        *past], [*outs, *new],
        (torch.randint(0, 2048, (B, K)), torch.tensor([3, 6]), *cache), kv))
    past, new, kv = kv_specs(d.n_layers, d.n_kv_heads, d.head_dim, "depth_len", 1)
    dcache = [torch.randn(B, d.n_kv_heads, K, d.head_dim) for _ in past]
    specs.append(GraphSpec(
        "depth_step", depth,
        [TensorSpec("hidden", FLOAT, ["batch", b.dim]), TensorSpec("prev_code", INT, ["batch"]),
         TensorSpec("depth_pos", INT, [1]), *past], [TensorSpec("logits", FLOAT, ["batch", V]), *new],
        (torch.randn(B, b.dim), torch.randint(0, 2048, (B,)), torch.tensor([2]), *dcache), kv))
    specs += codec_specs(mimi, K)
    return specs


def codec_specs(mimi, K: int) -> list[GraphSpec]:
    """Mimi's streaming decoder (state in, state out) and its encoder (for context segments)."""
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
