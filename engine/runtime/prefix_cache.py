"""The voice-prompt prefix cache: a voice's KV entries, computed once, copied into every later stream.

A stream's prompt is `prefix + own text`: the prefix is the voice slot (the
speaker embedding) and, for a voice with an acoustic prompt, its transcript
and its codec frames (a CSM context segment). The prefix depends only on the voice, so its KV entries
are computed by the first stream that uses the voice and copied into the slot
of every later one, which then prefills only its own text.

Used from the scheduler thread only; bounded by bytes, least recently used out.
"""
from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class Prefix:
    """What a stream's prompt starts with (its voice); `key` identifies its KV entries.

    The reference family: `[VOICE]`, or `[VOICE, BOS, transcript..., EOT]` plus the sample's
    codec frames. CSM: a context segment, the transcript's prompt plus the sample's frames
    (ending with the end-of-speech frame). A built-in voice named in the text prompt: empty.
    """

    tokens: tuple[int, ...]
    codes: np.ndarray | None  # acoustic prompt frames [K, F], fed through the step graph
    key: str
    positions_per_frame: int = 1

    @property
    def length(self) -> int:
        return len(self.tokens) + (0 if self.codes is None else self.codes.shape[1] * self.positions_per_frame)

    @classmethod
    def build(cls, tokens, codes: np.ndarray | None = None, embedding: np.ndarray | None = None,
              positions_per_frame: int = 1) -> "Prefix":
        h = hashlib.sha256(b"" if embedding is None else np.ascontiguousarray(embedding, np.float32).tobytes())
        h.update(np.asarray(tokens, np.int64).tobytes())
        if codes is not None:
            codes = np.ascontiguousarray(codes, np.int64)
            h.update(codes.tobytes())
        return cls(tuple(int(t) for t in tokens), codes, h.hexdigest(), positions_per_frame)


class PrefixCache:
    """key -> KV entries [L, 2, Hkv, n, Dh] of a prefix (the stream's own text prefill follows it)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def get(self, key: str) -> np.ndarray | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return entry

    def put(self, key: str, kv: np.ndarray) -> None:
        if kv.nbytes > self.max_bytes:
            return
        self.entries[key] = kv
        self.entries.move_to_end(key)
        while self.nbytes > self.max_bytes:
            self.entries.popitem(last=False)
