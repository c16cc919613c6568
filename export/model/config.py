"""Hyperparameters of the reference model family, as plain dataclasses.

Three named sizes (`tiny`, `small`, `1b`) live in `SIZES`; `TTSConfig.from_name`
builds one and accepts overrides (`from_name("tiny", n_codebooks=1)`). What is
saved next to the weights is `to_dict()` as JSON; `from_dict` reads it back.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from cadenza.engine.contract.text import N_TEXT_TOKENS


@dataclass(frozen=True)
class CodecConfig:
    """Causal SEANet/Mimi-style codec around residual vector quantisation."""

    sample_rate: int = 24_000
    strides: tuple[int, ...] = (4, 5, 8, 12)  # product = hop
    channels: int = 8  # first conv width; doubles after every stride
    latent_dim: int = 64
    n_codebooks: int = 4  # K
    codebook_size: int = 64  # C
    kernel_size: int = 7
    res_kernel_size: int = 3

    def __post_init__(self):
        if self.n_codebooks < 1 or self.codebook_size < 2:
            raise ValueError(f"a codec needs n_codebooks >= 1 and codebook_size >= 2, got {self.n_codebooks} "
                             f"and {self.codebook_size}")
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"strides must be positive integers, got {self.strides}")

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop


@dataclass(frozen=True)
class TransformerConfig:
    """A Llama-style decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU."""

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 0  # 0 -> derived in __post_init__
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 512

    def __post_init__(self):
        if self.ffn_dim == 0:
            hidden = int(2 * 4 * self.dim / 3)
            object.__setattr__(self, "ffn_dim", 32 * ((hidden + 31) // 32))
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"dim {self.dim} / heads {self.n_heads} / kv heads {self.n_kv_heads} do not divide")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass(frozen=True)
class TTSConfig:
    """The whole model: codec, speaker encoder, backbone and depth decoder."""

    name: str = "tiny"
    codec: CodecConfig = field(default_factory=CodecConfig)
    backbone: TransformerConfig = field(default_factory=TransformerConfig)
    depth: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=64))
    speaker_dim: int = 256
    speaker_channels: int = 32
    text_vocab: int = N_TEXT_TOKENS
    logit_scale: float = 4.0  # random weights: spread logits so greedy argmax has clear margins
    seed: int = 0

    @property
    def n_codebooks(self) -> int:
        return self.codec.n_codebooks

    @property
    def codebook_size(self) -> int:
        return self.codec.codebook_size

    @property
    def eos_id(self) -> int:
        """Codebook-0 logit index meaning end of speech (one past the codes)."""
        return self.codec.codebook_size

    @classmethod
    def from_name(cls, name: str, **overrides) -> "TTSConfig":
        """A named size, with optional overrides (`n_codebooks`, `codebook_size`, `seed`, ...)."""
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}")
        cfg = SIZES[name]
        codec_keys = {f.name for f in fields(CodecConfig)}
        codec_over = {k: v for k, v in overrides.items() if k in codec_keys}
        rest = {k: v for k, v in overrides.items() if k not in codec_keys}
        if codec_over:
            cfg = replace(cfg, codec=replace(cfg.codec, **codec_over))
        return replace(cfg, **rest) if rest else cfg

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TTSConfig":
        d = dict(d)
        codec = dict(d.pop("codec"))
        codec["strides"] = tuple(codec["strides"])
        return cls(codec=CodecConfig(**codec), backbone=TransformerConfig(**d.pop("backbone")),
                   depth=TransformerConfig(**d.pop("depth")), **d)

    @classmethod
    def from_json(cls, path: str | Path) -> "TTSConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


SIZES: dict[str, TTSConfig] = {
    # tests: runs in well under a second
    "tiny": TTSConfig(name="tiny"),
    # ~100M-parameter backbone: CPU benchmarks
    "small": TTSConfig(
        name="small",
        codec=CodecConfig(channels=32, latent_dim=256, n_codebooks=8, codebook_size=1024),
        backbone=TransformerConfig(dim=768, n_layers=14, n_heads=12, n_kv_heads=4, ffn_dim=2048, max_seq_len=2048),
        # the depth decoder runs K-1 = 7 times per frame: kept at ~2% of the backbone per step
        depth=TransformerConfig(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=768, max_seq_len=64),
        speaker_channels=64,
    ),
    # Llama-3.2-1B backbone shape, 32 codebooks (CSM-1B-like): GPU benchmarks
    "1b": TTSConfig(
        name="1b",
        codec=CodecConfig(channels=64, latent_dim=512, n_codebooks=32, codebook_size=2048),
        backbone=TransformerConfig(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
                                   rope_theta=500_000.0, max_seq_len=4096),
        depth=TransformerConfig(dim=1024, n_layers=4, n_heads=8, n_kv_heads=2, ffn_dim=4096, max_seq_len=64),
        speaker_channels=128,
    ),
}
