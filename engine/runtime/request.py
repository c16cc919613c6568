"""What one stream asks for: `Request`, built from the caller's text, voice and options.

`RequestBuilder.build` applies every rule that turns a call of `Engine.stream`
into work for the scheduler, in one place: the voice's prompt prefix, the text
split into segments that fit a KV slot together with their frames, each
segment's prompt from the family's template, the length policy (or an exact
`frames=N`), and the sampling parameters. A `Request` is immutable; the
scheduler's per-stream state lives in `StreamState` (`stream.py`).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..contract import text as tok
from ..contract.bundle import Bundle
from ..errors import KVCacheExhausted
from .prefix_cache import Prefix
from .sampler import SamplingParams


@dataclass(frozen=True, eq=False)
class Request:
    """One stream's work: prompt segments after a shared voice prefix, their frame bounds, sampling."""

    segments: tuple[tuple[int, ...], ...]  # prompt tokens per text segment (after the prefix)
    bounds: tuple[tuple[int, int], ...]  # (min_frames, max_frames) per segment
    voice: np.ndarray | None  # speaker embedding [E], for families that take one
    prefix: Prefix
    params: SamplingParams
    forced: bool = False  # frames=N: exactly N frames, end of speech never sampled

    @property
    def prefill_tokens(self) -> int:
        """Positions the first prefill computes (the prefix may come from the cache)."""
        return self.prefix.length + len(self.segments[0])


@dataclass(frozen=True)
class VoicePrompt:
    """A resolved voice.

    embedding: the speaker embedding [E] (families whose prompt takes one).
    name: the built-in voice or speaker id the text prompt names (other families).
    codes / transcript: an acoustic prompt (a stored voice made with its codec frames).
    """

    embedding: np.ndarray | None = None
    name: str | None = None
    codes: np.ndarray | None = None
    transcript: str | None = None


class RequestBuilder:
    """Turns (text, voice, frames, sampling) into a `Request` for one bundle and slot length."""

    def __init__(self, bundle: Bundle, max_len: int):
        self.b, self.max_len = bundle, max_len
        self.frame_rate = bundle.constants.frame_rate
        self.per_frame = bundle.layout.tokens_per_frame

    def neutral_voice(self) -> VoicePrompt:
        E = self.b.constants.speaker_dim
        return VoicePrompt(np.zeros(E, np.float32) if E else None)

    def prefix(self, voice: VoicePrompt) -> Prefix:
        """The prompt positions a voice puts before every segment (empty for a named voice)."""
        b = self.b
        tokens: list[int] = [tok.VOICE] if b.prompt.voice_kind == "embedding" else []
        codes = voice.codes
        if codes is not None:
            tokens += b.prompt.tokens(b.tokenizer, voice.transcript or "", voice.name)
            if b.layout.eos == "zero_frame":  # a context segment ends as the model ends its speech
                codes = np.concatenate([codes, np.zeros((codes.shape[0], 1), np.int64)], axis=1)
        return Prefix.build(tokens, codes, voice.embedding, self.per_frame)

    def build(self, text: str, voice: VoicePrompt, frames: int | None, params: SamplingParams) -> Request:
        """Raises TextError, KVCacheExhausted or ValueError with what to change."""
        b, prefix = self.b, self.prefix(voice)
        if frames is None:
            overhead = len(b.prompt.tokens(b.tokenizer, "", voice.name))
            limit = b.length.longest_text(self.max_len - prefix.length, self.frame_rate, self.per_frame, overhead)
            if limit < 1:
                raise KVCacheExhausted(f"the voice's prompt takes {prefix.length} of the {self.max_len} positions a "
                                       "slot holds, leaving no room for text; use a shorter voice sample or raise max_len")
            segments = tok.split_text(text, limit)
            bounds = [b.length.bounds(s, self.frame_rate) for s in segments]
        else:  # an exact length (benchmarks): one segment, which must fit with its frames
            if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
                raise ValueError(f"frames must be a positive int, got {frames!r}")
            segments, bounds = [tok.check_text(text)], [(int(frames), int(frames))]
        prompts = [tuple(b.prompt.tokens(b.tokenizer, s, voice.name)) for s in segments]
        for p, (_, cap) in zip(prompts, bounds):
            if prefix.length + len(p) + cap * self.per_frame > self.max_len:
                what = f"frames={frames} keeps the text in one segment: " if frames else ""
                raise KVCacheExhausted(
                    f"{what}a voice prefix of {prefix.length} plus a prompt of {len(p)} tokens plus {cap} frames "
                    f"({self.per_frame} positions each) exceeds max_len={self.max_len}; raise max_len, shorten the "
                    "text or lower frames")
        return Request(tuple(prompts), tuple(bounds), voice.embedding, prefix, params, forced=frames is not None)

    # --- incremental text (`runtime/text_feed.py`): segments built one at a time -----------------
    def text_limit(self, voice: VoicePrompt, prefix: Prefix) -> int:
        """The most UTF-8 bytes one text segment may hold (it fits a slot after `prefix`, with its frames)."""
        b = self.b
        overhead = len(b.prompt.tokens(b.tokenizer, "", voice.name))
        return b.length.longest_text(self.max_len - prefix.length, self.frame_rate, self.per_frame, overhead)

    def segment(self, text: str, voice: VoicePrompt, prefix: Prefix) -> tuple[tuple[int, ...], tuple[int, int]]:
        """One segment of incremental text: (its prompt tokens, its (min, max) frames), as `build` makes
        them. Raises KVCacheExhausted if it does not fit a slot (a segment within `text_limit` does)."""
        b = self.b
        bounds = b.length.bounds(text, self.frame_rate)
        prompt = tuple(b.prompt.tokens(b.tokenizer, text, voice.name))
        if prefix.length + len(prompt) + bounds[1] * self.per_frame > self.max_len:
            raise KVCacheExhausted(f"a voice prefix of {prefix.length} plus a prompt of {len(prompt)} tokens plus "
                                   f"{bounds[1]} frames exceeds max_len={self.max_len}; raise max_len")
        return prompt, bounds
