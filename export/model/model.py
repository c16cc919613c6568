"""The reference TTS model: backbone + depth decoder + codec + speaker encoder.

Random weights, seeded: the model exercises every part of the engine at
realistic shapes, but it does not speak.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cadenza.engine.contract import text as tok

from .codec import Codec, SpeakerEncoder
from .config import TTSConfig
from .transformer import Transformer, init_weights


class Backbone(nn.Module):
    """Text + voice prompt, then one step per audio frame predicting codebook 0 (+ EOS)."""

    def __init__(self, cfg: TTSConfig):
        super().__init__()
        b, K, C = cfg.backbone, cfg.n_codebooks, cfg.codebook_size
        self.text_emb = nn.Embedding(cfg.text_vocab, b.dim)
        self.voice_proj = nn.Linear(cfg.speaker_dim, b.dim)
        self.audio_emb = nn.Embedding(K * C, b.dim)  # codebook k, code c -> row k*C + c
        self.register_buffer("code_offsets", torch.arange(K) * C, persistent=False)
        self.transformer = Transformer(b)
        self.head = nn.Linear(b.dim, C + 1, bias=False)  # codebook 0 + end-of-speech

    def embed_prompt(self, tokens, voice):
        """tokens [B, P] (VOICE marks the voice slot), voice [B, E] -> [B, P, D].

        The voice conditions every prompt position: it fills the VOICE slot and is
        added to each text token's embedding.
        """
        v = self.voice_proj(voice)[:, None, :]  # [B, 1, D]
        x = self.text_emb(tokens) + v
        return torch.where((tokens == tok.VOICE)[..., None], v, x)

    def embed_codes(self, codes):
        """codes [B, K] -> summed codebook embeddings [B, 1, D]."""
        return self.audio_emb(codes + self.code_offsets).sum(1, keepdim=True)

    def forward(self, x, positions, past_k, past_v, past_len):
        h, nk, nv = self.transformer(x, positions, past_k, past_v, past_len)
        return h, nk, nv


class DepthDecoder(nn.Module):
    """Predicts codebooks 1..K-1 of a frame from the backbone hidden state.

    Depth position p (0..K-2) consumes codebook p's code (plus, at p = 0, the
    projected backbone hidden) and predicts codebook p + 1 with head p.
    """

    def __init__(self, cfg: TTSConfig):
        super().__init__()
        d, K, C = cfg.depth, cfg.n_codebooks, cfg.codebook_size
        self.C = C
        self.in_proj = nn.Linear(cfg.backbone.dim, d.dim, bias=False)
        self.code_emb = nn.Embedding((K - 1) * C, d.dim)
        self.transformer = Transformer(d)
        self.heads = nn.Parameter(torch.randn(K - 1, d.dim, C) * cfg.logit_scale / d.dim ** 0.5)

    def forward(self, hidden, prev_code, depth_pos, past_k, past_v):
        """hidden [B, Db], prev_code [B], depth_pos [1] -> (logits [B, C], new_k, new_v)."""
        B = hidden.shape[0]
        first = (depth_pos == 0).to(hidden.dtype)  # [1]
        x = self.code_emb(prev_code + depth_pos * self.C) + self.in_proj(hidden) * first  # [B, Dd]
        pos = depth_pos.expand(B)  # [B]
        h, nk, nv = self.transformer(x[:, None], pos[:, None], past_k, past_v, pos)
        head = self.heads[depth_pos[0]]  # [Dd, C]
        return h[:, 0] @ head, nk, nv


class TTSModel(nn.Module):
    def __init__(self, cfg: TTSConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.depth = DepthDecoder(cfg) if cfg.n_codebooks > 1 else None
        self.codec = Codec(cfg.codec)
        self.speaker = SpeakerEncoder(cfg.speaker_channels, cfg.speaker_dim)

    @classmethod
    def from_config(cls, cfg: TTSConfig) -> "TTSModel":
        """Build with deterministic seeded init (same config + seed -> same weights)."""
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed)
        try:
            model = cls(cfg)
            init_weights(model.backbone)
            if model.depth is not None:
                init_weights(model.depth.transformer)
            nn.init.normal_(model.backbone.head.weight, 0.0, cfg.logit_scale / cfg.backbone.dim ** 0.5)
            # a strong voice projection, so that with random weights the voice (and through it the
            # prompt) visibly conditions the greedy codes instead of vanishing in the residual stream
            nn.init.normal_(model.backbone.voice_proj.weight, 0.0, 0.25)
        finally:
            torch.random.set_rng_state(gen_state)
        return model.eval()

    def save(self, directory: str | Path) -> Path:
        """Write `model.safetensors` + `config.json` into `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, cfg: TTSConfig | None = None) -> "TTSModel":
        """Read a directory written by `save` (or `--weights` for trained weights); `cfg`: its config,
        already read and checked (default: read `config.json`)."""
        d = Path(directory)
        if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
            raise ValueError(f"{d} needs config.json and model.safetensors (as written by TTSModel.save)")
        model = cls(cfg or TTSConfig.from_json(d / "config.json"))
        try:
            missing, unexpected = model.load_state_dict(load_file(str(d / "model.safetensors")), strict=False)
        except RuntimeError as e:  # size mismatches
            raise ValueError(f"checkpoint {d} does not fit its config.json: {str(e).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise ValueError(f"checkpoint {d} does not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.eval()

    def n_params(self, part: str = "backbone") -> int:
        return sum(p.numel() for p in getattr(self, part).parameters())
