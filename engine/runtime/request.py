"""What one stream asks for: `Request`, built from the caller's text, voice and options.

`RequestBuilder.build` applies every rule that turns a call of `Engine.stream`
into work for the scheduler, in one place: the voice's prompt prefix, the text
split into segments that fit a KV slot with their frames, the length policy
(or an exact `frames=N`), and the sampling parameters. A `Request` is immutable;
the scheduler's per-stream state lives in `StreamState` (`stream.py`).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..contract import text as tok
from ..contract.constants import ModelConstants
from ..errors import KVCacheExhausted
from .prefix_cache import Prefix
from .sampler import SamplingParams


@dataclass(frozen=True, eq=False)
class Request:
    """One stream's work: prompt segments after a shared voice prefix, their frame bounds, sampling."""

    segments: tuple[tuple[int, ...], ...]  # prompt tokens per text segment (after the prefix)
    bounds: tuple[tuple[int, int], ...]  # (min_frames, max_frames) per segment
    voice: np.ndarray  # speaker embedding [E]
    prefix: Prefix
    params: SamplingParams
    forced: bool = False  # frames=N: exactly N frames, end of speech never sampled

    @property
    def prefill_tokens(self) -> int:
        """Positions the first prefill computes (the prefix may come from the cache)."""
        return self.prefix.length + len(self.segments[0])


@dataclass(frozen=True)
class VoicePrompt:
    """A resolved voice: its embedding, and for an acoustic prompt its codec frames and transcript."""

    embedding: np.ndarray  # float32 [E]
    codes: np.ndarray | None = None  # [K, F]
    transcript: str | None = None


class RequestBuilder:
    """Turns (text, voice, frames, sampling) into a `Request` for one bundle and slot length."""

    def __init__(self, constants: ModelConstants, max_len: int):
        self.c, self.max_len = constants, max_len

    def neutral_voice(self) -> VoicePrompt:
        return VoicePrompt(np.zeros(self.c.speaker_dim, np.float32))

    def build(self, text: str, voice: VoicePrompt, frames: int | None, params: SamplingParams) -> Request:
        """Raises TextError, KVCacheExhausted or ValueError with what to change."""
        prefix = Prefix.for_voice(voice.embedding, voice.codes, voice.transcript)
        if frames is None:
            segments = tok.split_text(text, tok.longest_text(self.max_len - prefix.length, self.c.frame_rate))
            bounds = [tok.frame_bounds(s, self.c.frame_rate) for s in segments]
        else:  # an exact length (benchmarks): one segment, which must fit with its frames
            if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
                raise ValueError(f"frames must be a positive int, got {frames!r}")
            segments, bounds = [tok.check_text(text)], [(int(frames), int(frames))]
        prompts = [tuple(tok.prompt_tokens(s, with_voice=False)) for s in segments]
        for p, (_, cap) in zip(prompts, bounds):
            if prefix.length + len(p) + cap > self.max_len:
                what = f"frames={frames} keeps the text in one segment: " if frames else ""
                raise KVCacheExhausted(
                    f"{what}a voice prefix of {prefix.length} plus a prompt of {len(p)} tokens plus {cap} frames "
                    f"exceeds max_len={self.max_len}; raise max_len, shorten the text or lower frames")
        return Request(tuple(prompts), tuple(bounds), voice.embedding, prefix, params, forced=frames is not None)
