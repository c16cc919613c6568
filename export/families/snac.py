"""SNAC 24 kHz as Orpheus uses it: 7 codes per frame in, 2048 samples per frame out.

Orpheus frame slot -> SNAC level (level k has a code every 4 / 2^k latent steps):
    level 0 (1 code per frame): slot 0
    level 1 (2 codes per frame): slots 1, 4
    level 2 (4 codes per frame): slots 2, 3, 5, 6

`SnacFrameDecoder` is `SNAC.decode` on de-interleaved frames, written to export to ONNX
with a dynamic batch and length: the code lookup (per level: repeat each code by its
stride, look it up, `out_proj`, sum) replaces `quantizer.from_codes`, whose
`repeat_interleave` traces into a Reshape with baked constants. Its `NoiseBlock`s are
left out: each adds `randn * linear(x)`, a fresh sample on every call, so leaving them
out is the same as taking that sample at its mean (zero) and makes decoding deterministic.
SNAC is not causal (one frame's codes move about 2.25 frames of audio either side): the
engine decodes it through windows of context frames (`OrtWindowDecoder`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, read_config, require_files, resolve

CODES_PER_FRAME = 7
LATENT_STEPS_PER_FRAME = 4
SAMPLES_PER_FRAME = 2048
LEVEL_SLOTS = ((0,), (1, 4), (2, 3, 5, 6))


def load_snac(source: str) -> nn.Module:
    """`snac.SNAC.from_pretrained` of a local directory or hub id (config.json + pytorch_model.bin)."""
    try:
        from snac import SNAC
    except ImportError:
        raise CheckpointError("the Orpheus codec needs the snac package: pip install 'cadenza-tts[export]'") from None
    d = resolve(source, "the SNAC codec", allow=("config.json", "pytorch_model.bin"))
    cfg = read_config(d, "the SNAC codec")
    require_files(d, "the SNAC codec", "pytorch_model.bin")
    want = {"sampling_rate": 24000, "vq_strides": [4, 2, 1], "codebook_size": 4096}
    bad = {k: cfg.get(k) for k, v in want.items() if cfg.get(k) != v}
    hop = 1
    for r in cfg.get("encoder_rates", []):
        hop *= r
    if bad or hop != 512:
        raise CheckpointError(f"the codec {d} is not a 24 kHz SNAC that fits Orpheus ({bad or f'hop {hop}'}; "
                              f"needs {want}, hop 512); pass --codec hubertsiuzdak/snac_24khz")
    return SNAC.from_pretrained(str(d)).eval()


def split_levels(codes: torch.Tensor) -> list[torch.Tensor]:
    """codes [B, 7, W] -> [level 0 [B, W], level 1 [B, 2W], level 2 [B, 4W]], in time order."""
    return [codes[:, list(slots), :].transpose(1, 2).flatten(1) for slots in LEVEL_SLOTS]


def without_noise(module: nn.Module) -> nn.Module:
    """A view of `module` with every NoiseBlock replaced by identity (shares all weights)."""
    from snac.layers import NoiseBlock

    if isinstance(module, NoiseBlock):
        return nn.Identity()
    if not any(isinstance(m, NoiseBlock) for m in module.modules()):
        return module
    clone = nn.Module.__new__(type(module))
    clone.__dict__ = dict(module.__dict__)
    clone._modules = {name: without_noise(child) for name, child in module._modules.items()}
    return clone


class SnacFrameDecoder(nn.Module):
    """Orpheus-frame codes [B, 7, W] (0..4095) -> PCM [B, W * 2048], noise off."""

    def __init__(self, snac_model: nn.Module):
        super().__init__()
        self.strides = [int(s) for s in snac_model.vq_strides]
        self.quantizers = snac_model.quantizer.quantizers
        self.decoder = without_noise(snac_model.decoder)

    def latent(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, 7, W] -> the latent z [B, C, 4W] (what `quantizer.from_codes` computes)."""
        z = None
        for level, vq, stride in zip(split_levels(codes), self.quantizers, self.strides):
            full = level.unsqueeze(-1).expand(-1, -1, stride).flatten(1) if stride > 1 else level  # [B, 4W]
            part = vq.out_proj(F.embedding(full, vq.codebook.weight).transpose(1, 2))  # [B, C, 4W]
            z = part if z is None else z + part
        return z

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # snac's `snake` is a scripted function that the profiling executor re-specialises for every
        # new length (seconds per new window size); plain execution gives the same numbers and trace
        with torch.jit.optimized_execution(False):
            return self.decoder(self.latent(codes)).squeeze(1)  # [B, W * 2048]
