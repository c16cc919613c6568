"""The voice-prompt prefix cache: a cached prefix gives the same codes as a full prefill, and the
cache stays within its byte budget (least recently used out)."""
from __future__ import annotations

import numpy as np

from cadenza.engine.runtime.prefix_cache import Prefix, PrefixCache
from cadenza.engine.voices.voice import Voice
from support import read


def _voice(seed: int, bundle=None, frames: int = 9) -> Voice:
    """A voice with an acoustic prompt (made for `bundle`, if given)."""
    rs = np.random.RandomState(seed)
    emb = rs.randn(256).astype(np.float32)
    meta = {} if bundle is None else {"family": bundle.family, "bundle_hash": bundle.hash}
    return Voice("v", emb / np.linalg.norm(emb), rs.randint(0, 64, (4, frames)), "a sample", meta)


def test_cached_prefix_equals_full_prefill(make_engine):
    """Greedy, tiny: with the cache off every stream prefills voice + transcript + prompt frames;
    with it on, the second stream copies them. Codes are identical either way."""
    off = make_engine(prefix_cache_mb=0)
    on = make_engine()
    v = _voice(0, on.bundle)
    want = read(off.stream("Cached or not.", voice=v, greedy=True)).codes
    first = read(on.stream("Cached or not.", voice=v, greedy=True)).codes
    hits = on.scheduler.prefixes.hits
    second = read(on.stream("Cached or not.", voice=v, greedy=True)).codes
    assert on.scheduler.prefixes.hits == hits + 1  # the second stream used the cache
    np.testing.assert_array_equal(first, want)
    np.testing.assert_array_equal(second, want)


def test_prefix_key_and_length(engine):
    """The reference family's prefix: [VOICE] (+ [BOS] transcript [EOT] and the prompt frames)."""
    from cadenza.engine.runtime.request import RequestBuilder, VoicePrompt

    v = _voice(1, frames=5)
    build = RequestBuilder(engine.bundle, 64).prefix
    p = build(VoicePrompt(v.embedding, codes=v.prompt_codes, transcript=v.transcript))
    assert p.length == 3 + len(v.transcript) + 5  # VOICE, BOS, transcript, EOT, frames
    plain = build(VoicePrompt(v.embedding))
    assert plain.tokens == (259,) and plain.length == 1
    assert p.key != plain.key != build(VoicePrompt(-v.embedding)).key
    flat = Prefix.build([1, 2], np.zeros((7, 3), np.int64), positions_per_frame=7)
    assert flat.length == 2 + 3 * 7  # a flat layout spends 7 positions per frame


def test_cache_evicts_least_recently_used():
    c = PrefixCache(max_bytes=3 * 400)
    a, b, d = (np.zeros(100, np.float32) for _ in range(3))  # 400 bytes each
    c.put("a", a)
    c.put("b", b)
    c.put("d", d)
    assert c.get("a") is a  # a is now the most recent
    c.put("e", np.zeros(100, np.float32))
    assert c.get("b") is None and c.get("a") is a and c.nbytes <= 1200
    c.put("huge", np.zeros(1000, np.float32))  # larger than the whole budget: not kept
    assert c.get("huge") is None
