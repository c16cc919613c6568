"""`cadenza.engine.voices.audio`: voice samples in any format/rate/channel count come out as checked,
trimmed, level-normalised 24 kHz mono; every kind of bad input is a `VoiceError` that says why.

The test voice (`audio_samples.voiced`) is synthetic but voice-like and rate-independent.
"""
from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf

from cadenza.engine.voices.audio import (MAX_SECONDS, describe_bytes, load_audio, prepare_pcm, spectral_flatness)
from cadenza.engine.errors import CadenzaError, VoiceError
from audio_samples import SR, voiced, wav_bytes


HAS_OGG = "OGG" in sf.available_formats()


@pytest.mark.parametrize("sr,fmt,subtype,channels", [
    pytest.param(24000, "WAV", "PCM_16", 1, id="wav16-24k"),
    pytest.param(16000, "WAV", "PCM_16", 1, id="wav16-16k"),
    pytest.param(44100, "FLAC", "PCM_24", 1, id="flac-44.1k"),
    pytest.param(48000, "WAV", "FLOAT", 2, id="wavfloat-48k-stereo"),
    pytest.param(48000, "OGG", "VORBIS", 2, id="ogg-48k-stereo",
                 marks=pytest.mark.skipif(not HAS_OGG, reason="libsndfile without OGG")),
])
def test_formats_rates_channels(tmp_path, sr, fmt, subtype, channels):
    x = voiced(sr)
    path = tmp_path / f"s.{fmt.lower()}"
    sf.write(path, np.stack([x, 0.5 * x], 1) if channels == 2 else x, sr, format=fmt, subtype=subtype)
    pcm, info = load_audio(path, SR)
    assert pcm.dtype == np.float32 and pcm.ndim == 1 and pcm.flags.c_contiguous and np.isfinite(pcm).all()
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (sr, channels, fmt, subtype)
    assert info.seconds == pytest.approx(3.1, abs=0.03)  # 3 s of sound + 2 x 50 ms margins
    assert info.source_seconds == pytest.approx(3.6, abs=1e-3)
    assert len(pcm) == round(info.seconds * SR)
    assert np.abs(pcm).max() <= 0.99 + 1e-6
    assert len(info.sha256) == 64


def test_stereo_is_mixed_to_mono():
    x = voiced()
    mono, _ = load_audio(wav_bytes(x, SR, subtype="FLOAT"), SR)
    both, info = load_audio(wav_bytes(np.stack([x, x], 1), SR, subtype="FLOAT"), SR)
    one, _ = load_audio(wav_bytes(np.stack([x, np.zeros_like(x)], 1), SR, subtype="FLOAT"), SR)
    assert info.channels == 2
    np.testing.assert_allclose(both, mono, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one, mono, rtol=0, atol=1e-6)  # level is normalised after mixing


def test_silence_is_trimmed_with_margin():
    x = np.concatenate([np.zeros(SR, np.float32), voiced(lead=0), np.zeros(SR // 2, np.float32)])
    pcm, info = load_audio(wav_bytes(x, SR, subtype="FLOAT"), SR)
    assert info.trimmed_start_s == pytest.approx(0.95, abs=0.011)  # 1 s of silence less a 50 ms margin
    assert info.trimmed_end_s == pytest.approx(0.45, abs=0.011)
    assert info.seconds == pytest.approx(3.1, abs=0.011)


def test_level_is_normalised():
    quiet, _ = load_audio(wav_bytes(0.01 * voiced(), SR, subtype="FLOAT"), SR)
    loud, info = load_audio(wav_bytes(voiced(), SR, subtype="FLOAT"), SR)
    np.testing.assert_allclose(quiet, loud, rtol=0, atol=1e-5)
    assert info.gain_db != 0


def test_file_object_and_path_agree(tmp_path):
    sf.write(tmp_path / "a.wav", voiced(), SR)
    a, ia = load_audio(tmp_path / "a.wav", SR)
    with open(tmp_path / "a.wav", "rb") as f:
        b, ib = load_audio(f, SR)
    np.testing.assert_array_equal(a, b)
    assert ia.sha256 == ib.sha256
    assert ib.source.endswith("a.wav")


def test_configurable_cap():
    x = voiced(seconds=6.0)
    load_audio(wav_bytes(x, SR), SR)
    with pytest.raises(VoiceError, match="limited to 5 s"):
        load_audio(wav_bytes(x, SR), SR, max_seconds=5)


def _text_file(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("This is not audio, just some notes.\n")
    return p


def _write(tmp_path, x, sr=SR, subtype="PCM_16"):
    p = tmp_path / "bad.wav"
    sf.write(p, x, sr, subtype=subtype)
    return p


def _raw(name: str, data: bytes):
    def make(tmp_path):
        p = tmp_path / name
        p.write_bytes(data)
        return p
    return make


def _nan(tmp_path):
    x = voiced()
    x[SR] = np.nan
    return _write(tmp_path, x, subtype="FLOAT")


def _too_long(tmp_path):
    one = voiced(16000, lead=0.0)
    return _write(tmp_path, np.tile(one, 21), 16000)  # 63 s of speech at 16 kHz


def _clipped_noise(tmp_path):
    return _write(tmp_path, np.clip(np.random.default_rng(0).normal(0, 1, 3 * SR), -1, 1))


def _clipped_speech(tmp_path):
    return _write(tmp_path, np.clip(8 * voiced(), -1, 1))


BAD = {
    "too-short": (lambda p: _write(p, voiced(seconds=0.6)), "at least 1 s"),
    "too-long": (_too_long, "limited to 60 s"),
    "far-too-long": (lambda p: _write(p, np.zeros(250 * 8000), 8000), r"250\.0 s of 1-channel audio"),
    "silent": (lambda p: _write(p, np.zeros(3 * SR)), "silent"),
    "near-silent": (lambda p: _write(p, 1e-5 * voiced(), subtype="FLOAT"), "silent"),
    "clipped-noise": (_clipped_noise, "clipped"),
    "clipped-speech": (_clipped_speech, "clipped"),
    "white-noise": (lambda p: _write(p, np.random.default_rng(1).normal(0, 0.1, 3 * SR)), "noise"),
    "text-as-wav": (_text_file, "UTF-8 text"),
    "empty-file": (_raw("e.wav", b""), "empty"),
    "no-frames": (lambda p: _write(p, np.zeros(0)), "no audio samples"),
    "png-as-wav": (_raw("i.wav", b"\x89PNG\r\n\x1a\n" + bytes(100)), "PNG image"),
    "truncated-wav": (_raw("t.wav", b"RIFF\x24\x00\x00\x00WAVEfmt "), "RIFF file"),
    "missing": (lambda p: p / "nope.wav", "no such file"),
    "directory": (lambda p: p, "directory"),
    "nan": (_nan, "NaN"),
}


@pytest.mark.parametrize("make,match", [pytest.param(*v, id=k) for k, v in BAD.items()])
def test_bad_input_is_a_voice_error(tmp_path, make, match):
    with pytest.raises(VoiceError, match=match) as e:
        load_audio(make(tmp_path), SR)
    assert isinstance(e.value, CadenzaError)
    assert "\n" not in str(e.value)  # one line for the CLI


def test_bad_arrays():
    with pytest.raises(VoiceError, match="NaN or infinite"):
        prepare_pcm(np.full(SR * 2, np.inf, np.float32), SR, SR)
    with pytest.raises(VoiceError, match="no audio samples"):
        prepare_pcm(np.zeros((0, 2)), SR, SR)
    with pytest.raises(VoiceError, match="sample rate"):
        prepare_pcm(voiced(), 0, SR)


def test_describe_bytes():
    assert describe_bytes(b"hello world") == "UTF-8 text ('hello world')"
    assert describe_bytes(b"%PDF-1.7 ...") == "a PDF document"
    assert "MP4" in describe_bytes(b"\x00\x00\x00\x20ftypM4A ")
    assert describe_bytes(bytes(range(256))).startswith("binary data of 256 bytes starting 00 01")


def test_flatness_separates_voice_from_noise():
    """The noise criterion (module docstring): white noise ~0.99, the test voice ~0.2, threshold 0.7."""
    rng = np.random.default_rng(0)
    assert spectral_flatness(rng.normal(size=3 * SR), SR) > 0.9
    assert spectral_flatness(voiced().astype(np.float64), SR) < 0.3
    assert MAX_SECONDS == 60.0
