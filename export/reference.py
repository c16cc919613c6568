"""The plain eager `generate()`: the reference every fast path is checked against.

Driven the way most projects drive such a model: eager modules, a KV cache
grown by concatenation, one sampling call per code. Sampling follows the run
time's definition (`cadenza.engine.runtime.sampler`) with the same counter-based
draws, so the engine must produce exactly these codes, greedy or seeded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cadenza.engine.contract import text as tok
from cadenza.engine.contract.length import LengthPolicy
from cadenza.engine.runtime.rng import seed_int64
from cadenza.kernels.rng import counter_uniform
from cadenza.kernels.sampling import sample_reference

from .model.model import TTSModel


@dataclass
class RefSampling:
    """Sampling for the reference loop (greedy when temperature <= 0; no repetition penalty)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


class Draws:
    """A stream's draw counter: code k of frame f uses `counter_uniform(seed, f * K + k)`."""

    def __init__(self, seed: int, n_codebooks: int):
        self.seed, self.K, self.frame = seed_int64(seed), n_codebooks, 0

    def uniform(self, k: int) -> torch.Tensor:
        return counter_uniform(torch.tensor([self.seed]), torch.tensor([self.frame * self.K + k]))  # [1]


def sample_torch(logits: torch.Tensor, s: RefSampling, draws: Draws, k: int) -> int:
    """logits [V] -> the id for codebook `k` of the current frame."""
    if s.temperature <= 0:
        return int(logits.argmax())
    one = torch.ones(1)
    return int(sample_reference(logits[None].float(), one * s.temperature, torch.tensor([s.top_k]),
                                one * s.top_p, draws.uniform(k))[0])


def _grow(cache_k, cache_v, new_k, new_v):
    if cache_k is None:
        return new_k, new_v
    return ([torch.cat([a, b], dim=2) for a, b in zip(cache_k, new_k)],
            [torch.cat([a, b], dim=2) for a, b in zip(cache_v, new_v)])


@torch.no_grad()
def generate(model: TTSModel, text: str, voice: torch.Tensor | None = None, *,
             frames: int | None = None, sampling: RefSampling | None = None) -> torch.Tensor:
    """Generate the codes of one segment of text.

    Args:
        text: the text (one segment; it must fit the backbone context).
        voice: [E] speaker embedding, or None for the neutral (zero) voice.
        frames: force exactly this many frames (end-of-speech is ignored).
        sampling: None means greedy.
    Returns:
        codes [K, F] int64.
    Example:
        >>> codes = generate(TTSModel.from_config(TTSConfig.from_name("tiny")), "Hello.")
    """
    cfg, bb = model.cfg, model.backbone
    s = sampling or RefSampling()
    draws = Draws(s.seed, cfg.n_codebooks)
    text = tok.check_text(text)
    ids = torch.tensor([tok.prompt_tokens(text)])  # [1, P]
    P = ids.shape[1]
    if voice is None:
        voice = torch.zeros(cfg.speaker_dim)
    pk, pv = bb.transformer.empty_cache(1)
    x = bb.embed_prompt(ids, voice[None])
    h, ck, cv = bb(x, torch.arange(P)[None], pk, pv, torch.zeros(1, dtype=torch.long))
    h = h[:, -1]  # [1, D]
    min_f, max_f = LengthPolicy().bounds(text, cfg.codec.frame_rate)
    if frames is not None:
        min_f = max_f = frames
    out = []
    for f in range(max_f):
        logits = bb.head(h)[0]  # [C + 1]
        if f < min_f:
            logits[cfg.eos_id] = float("-inf")
        c0 = sample_torch(logits, s, draws, 0)
        if c0 == cfg.eos_id:
            break
        frame = [c0] + _depth_codes(model, h, c0, s, draws)
        draws.frame += 1
        out.append(frame)
        if f + 1 == max_f:
            break
        codes = torch.tensor([frame])  # [1, K]
        pos = torch.tensor([P + f])
        h, nk, nv = bb(bb.embed_codes(codes), pos[:, None], ck, cv, pos)
        ck, cv = _grow(ck, cv, nk, nv)
        h = h[:, -1]
    return torch.tensor(out, dtype=torch.long).reshape(-1, cfg.n_codebooks).t().contiguous()


def _depth_codes(model: TTSModel, h, c0: int, s: RefSampling, draws: Draws) -> list[int]:
    if model.depth is None:
        return []
    dk = dv = None
    prev, codes = c0, []
    for p in range(model.cfg.n_codebooks - 1):
        if dk is None:
            pk, pv = model.depth.transformer.empty_cache(1)
        else:
            pk, pv = dk, dv
        logits, nk, nv = model.depth(h, torch.tensor([prev]), torch.tensor([p]), pk, pv)
        dk, dv = _grow(dk, dv, nk, nv)
        prev = sample_torch(logits[0], s, draws, p + 1)
        codes.append(prev)
    return codes
