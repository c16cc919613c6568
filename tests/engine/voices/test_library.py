"""`VoiceLibrary` and the encoders: determinism, rate independence, conditioning, `engine.voices`.

Tolerances: the same sample gives a bit-identical embedding; the same content rendered at
16 / 44.1 / 48 kHz and resampled to 24 kHz gives an embedding within 1e-5 max-abs of the
24 kHz one (measured: 5e-8) and cosine >= 1 - 1e-6 (measured: 1.0 in float32), while a
different voice differs by > 1e-4 max-abs (measured: 7.6e-4 to 1.8e-3: the tiny random
speaker encoder maps every sample close to one direction). Lossy OGG/Vorbis at 48 kHz
stays within 3e-4 (measured: 5e-5).
"""
from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf

from cadenza.engine.errors import VoiceError
from cadenza.engine.voices.library import VoiceEncoder, VoiceLibrary, encode_voice
from cadenza.engine.voices.store import VoiceStore
from cadenza.engine.voices.voice import Voice
from audio_samples import voiced, wav_bytes
from support import E, HOP, K, SR, TEXT, codes, make_voice


# --- encoding ---------------------------------------------------------------------------
def test_encode_is_deterministic(engine, bundle):
    pcm = voiced()[SR // 4:-SR // 4]
    a = encode_voice(engine, pcm, "x", with_prompt=True)
    b = encode_voice(engine, pcm, "x", with_prompt=True)
    c = encode_voice(VoiceEncoder(bundle), pcm, "x", with_prompt=True)  # fresh graphs
    for v in (b, c):
        assert np.array_equal(v.embedding, a.embedding) and np.array_equal(v.prompt_codes, a.prompt_codes)
    assert a.embedding.shape == (E,) and a.embedding.dtype == np.float32
    assert a.prompt_codes.shape == (K, len(pcm) // HOP) and a.prompt_codes.dtype == np.int64
    assert 0 <= a.prompt_codes.min() and a.prompt_codes.max() < 64
    assert a.meta["family"] == bundle.manifest["family"] and a.meta["bundle_hash"] == bundle.hash
    assert a.meta["prompt_frames"] == len(pcm) // HOP and a.meta["cadenza_version"]

def test_prompt_is_capped_at_10_s(engine):
    v = encode_voice(engine, np.tile(voiced(lead=0), 5), "long", with_prompt=True)  # 15 s
    assert v.prompt_codes.shape == (K, int(10 * SR) // HOP)

def _cmp(x, y):
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)), float(np.abs(x - y).max())

def test_embedding_is_rate_independent(engine):
    lib = engine.voices
    ref = lib.encoder.embedding(_load(SR))
    other = lib.encoder.embedding(_load(SR, seed=1, f0=220.0))
    cos, diff_other = _cmp(ref, other)
    assert diff_other > 1e-2, "a different voice must differ by far more than the tolerances below"
    for sr in (16000, 44100, 48000):
        cos, diff = _cmp(ref, lib.encoder.embedding(_load(sr)))
        assert diff <= 1e-5 and cos >= 1 - 1e-6, (sr, cos, diff)
    if "OGG" in sf.available_formats():
        cos, diff = _cmp(ref, lib.encoder.embedding(_load(48000, fmt="OGG")))
        # lossy Vorbis moves the log band energies a little: still 10x closer than another voice
        assert diff <= 2e-3 and diff < diff_other / 10 and cos >= 1 - 1e-4, ("ogg", cos, diff, diff_other)

def _load(sr, fmt="WAV", **kw):
    from cadenza.engine.voices.audio import load_audio

    return load_audio(wav_bytes(voiced(sr, **kw), sr, fmt), SR)[0]

def test_engine_voices_api(engine, voices):
    lib = engine.voices
    assert isinstance(lib, VoiceLibrary) and lib.store.directory != VoiceStore().directory
    assert {"a", "a_p", "b", "b_p"} <= {e["name"] for e in lib.list()}
    assert np.array_equal(lib.get("a").embedding, voices["a"].embedding)
    assert voices["a_p"].transcript == "sample a" and voices["a_p"].prompt_codes.shape[0] == K
    assert voices["a"].meta["source_sample_rate"] == SR and voices["a"].meta["duration_s"] == pytest.approx(3.1, 0.01)
    v = lib.add(voiced(16000), "from-array", sample_rate=16000)  # an array at its own rate
    assert np.abs(v.embedding - voices["a"].embedding).max() < 1e-5
    with pytest.raises(VoiceError, match="already exists"):
        lib.add(voiced(16000), "from-array", sample_rate=16000)
    with pytest.raises(VoiceError, match="at least 1 s"):
        lib.add(voiced(seconds=0.5), "short")
    lib.remove("from-array")
    with pytest.raises(VoiceError, match="no voice named"):
        lib.get("from-array")

def test_voices_condition_generation(engine, bundle, voices):
    """A voice's embedding and its acoustic prompt both reach the model: with greedy decoding, two
    voices made from different samples give different codes for the same text, and so does the
    same voice with its acoustic prompt."""
    assert not np.array_equal(codes(engine, voices["a"]), codes(engine, voices["b"]))  # the embedding
    assert not np.array_equal(codes(engine, voices["a_p"]), codes(engine, voices["a"]))  # the prompt
    d = voices["a"].embedding - voices["b"].embedding
    d *= 8 / np.linalg.norm(d)
    plus, minus = make_voice(bundle, "plus"), make_voice(bundle, "minus")
    plus.embedding, minus.embedding = d, -d
    assert not np.array_equal(codes(engine, plus), codes(engine, minus))
    np.testing.assert_array_equal(codes(engine, plus.embedding), codes(engine, plus))  # array == Voice
    assert codes(engine, None).shape == (K, 12)

def test_stored_voice_gives_identical_codes(engine, voices):
    store = engine.voices.store
    for key in ("a", "a_p"):
        mem = codes(engine, voices[key])
        np.testing.assert_array_equal(codes(engine, store.get(key)), mem)
        np.testing.assert_array_equal(codes(engine, Voice.load(store.path(key))), mem)
    np.testing.assert_array_equal(codes(engine, "a"), codes(engine, voices["a"]))  # by name
    np.testing.assert_array_equal(codes(engine, store.path("a")), codes(engine, voices["a"]))  # a pathlib.Path
    with pytest.raises(VoiceError, match="no voice named 'nobody'"):
        engine.stream(TEXT, voice="nobody")
    with pytest.raises(VoiceError, match="invalid voice name"):  # a string is a name, never a path
        engine.stream(TEXT, voice=str(store.path("a")))

def test_stored_prompt_voice_by_name(engine, voices):
    np.testing.assert_array_equal(codes(engine, "a_p"), codes(engine, voices["a_p"]))
