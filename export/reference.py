"""The plain eager `generate()`: the reference every fast path is checked against.

Driven the way most projects drive such a model: eager modules, a KV cache
grown by concatenation, sampling in Python. The runtime must produce exactly
the same codes under greedy decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cadenza.engine import text as tok

from .model import TTSModel


@dataclass
class RefSampling:
    """Sampling for the reference loop (torch RNG; greedy when temperature <= 0)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


def sample_torch(logits: torch.Tensor, s: RefSampling, gen: torch.Generator) -> int:
    """logits [V] -> one id."""
    if s.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / s.temperature, dim=-1)
    p_sorted, idx = probs.sort(descending=True, stable=True)
    keep = len(p_sorted) if s.top_k <= 0 else min(s.top_k, len(p_sorted))
    cum = p_sorted[:keep].cumsum(0)
    keep = min(keep, int((cum < s.top_p).sum()) + 1)
    p = p_sorted[:keep] / p_sorted[:keep].sum()
    return int(idx[torch.multinomial(p, 1, generator=gen)])


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
    gen = torch.Generator().manual_seed(s.seed)
    text = tok.check_text(text)
    ids = torch.tensor([tok.prompt_tokens(text)])  # [1, P]
    P = ids.shape[1]
    if voice is None:
        voice = torch.zeros(cfg.speaker_dim)
    pk, pv = bb.transformer.empty_cache(1)
    x = bb.embed_prompt(ids, voice[None])
    h, ck, cv = bb(x, torch.arange(P)[None], pk, pv, torch.zeros(1, dtype=torch.long))
    h = h[:, -1]  # [1, D]
    min_f, max_f = tok.frame_bounds(text, cfg.codec.frame_rate)
    if frames is not None:
        min_f = max_f = frames
    out = []
    for f in range(max_f):
        logits = bb.head(h)[0]  # [C + 1]
        if f < min_f:
            logits[cfg.eos_id] = float("-inf")
        c0 = sample_torch(logits, s, gen)
        if c0 == cfg.eos_id:
            break
        frame = [c0] + _depth_codes(model, h, c0, s, gen)
        out.append(frame)
        if f + 1 == max_f:
            break
        codes = torch.tensor([frame])  # [1, K]
        pos = torch.tensor([P + f])
        h, nk, nv = bb(bb.embed_codes(codes), pos[:, None], ck, cv, pos)
        ck, cv = _grow(ck, cv, nk, nv)
        h = h[:, -1]
    return torch.tensor(out, dtype=torch.long).reshape(-1, cfg.n_codebooks).t().contiguous()


def _depth_codes(model: TTSModel, h, c0: int, s: RefSampling, gen) -> list[int]:
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
        prev = sample_torch(logits[0], s, gen)
        codes.append(prev)
    return codes
