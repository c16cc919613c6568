"""Voice-like test audio shared by the voice and server tests.

The test voice is synthetic but voice-like: harmonics of a gliding f0 (up to 4 kHz) under a
syllable-rate envelope with smooth 50 ms onsets, plus band-limited noise (60 sinusoids,
100 Hz - 6 kHz). It is a function of time, so every sample rate renders the same content.
"""
from __future__ import annotations

import functools
import io

import numpy as np
import soundfile as sf

SR = 24_000


@functools.lru_cache(maxsize=32)
def _voiced(sr: int, seconds: float, seed: int, f0: float, lead: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round((seconds + 2 * lead) * sr))) / sr
    ts = t - lead
    phase = 2 * np.pi * (f0 * ts - 30 / (2 * np.pi * 0.7) * np.cos(2 * np.pi * 0.7 * ts))  # f0 +- 30 Hz glide
    x = np.zeros_like(t)
    for k in range(1, int(4000 // (f0 + 30)) + 1):
        x += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    noise = np.zeros_like(t)
    for f, p in zip(rng.uniform(100, 6000, 60), rng.uniform(0, 2 * np.pi, 60)):
        noise += np.sin(2 * np.pi * f * t + p) / np.sqrt(30)
    ramp = np.clip(np.minimum(ts, seconds - ts) / 0.05, 0, 1)
    env = (0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * ts)) * np.sin(0.5 * np.pi * ramp) ** 2
    return (0.3 * x * env + 0.01 * noise * env).astype(np.float32)


def voiced(sr: int = SR, seconds: float = 3.0, seed: int = 0, f0: float = 140.0, lead: float = 0.3) -> np.ndarray:
    """A voice-like test signal: float32 [N] with `lead` s of silence on both sides."""
    return _voiced(sr, seconds, seed, f0, lead).copy()


def wav_bytes(x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str | None = None) -> io.BytesIO:
    b = io.BytesIO()
    sf.write(b, x, sr, format=fmt, subtype=subtype)
    b.seek(0)
    b.name = f"sample.{fmt.lower()}"
    return b
