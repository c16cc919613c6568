"""Time-to-first-audio with and without the voice-prompt prefix cache, side by side in one run.

    python -m cadenza.benchmarks.prefix_cache --bundle bundles/small [--prompt-seconds 5] [--runs 5]

A voice with an acoustic prompt (a synthetic voiced sample, its codec frames and a
transcript) is added to a temporary store. Two engines on the same bundle then run
the same streams: one with the prefix cache off (every stream prefills the voice
prefix: transcript tokens plus one step per prompt frame) and one with it on (the
first stream computes the prefix, later ones copy it into their slot). Runs
alternate between the engines. Prints one JSON object (also written with --json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np

from cadenza.engine import Engine


def voiced_sample(seconds: float, sr: int = 24_000, f0: float = 130.0) -> np.ndarray:
    """A voiced-like signal: harmonics under a formant-ish envelope, a slow vibrato, some noise."""
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k * np.exp(-((k * f0 - 700) / 900) ** 2) for k in range(1, 25))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t) ** 2) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def ttfa(engine: Engine, voice, text: str, frames: int) -> float:
    """Seconds from the stream() call to the first chunk handed out."""
    t0 = time.perf_counter()
    s = engine.stream(text, voice=voice, frames=frames, greedy=True)
    first = None
    for _ in s:
        first = first or time.perf_counter() - t0
    return first


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--prompt-seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    text = "The prefix cache means a stream only prefills its own text."
    with tempfile.TemporaryDirectory() as store, \
            Engine.load(args.bundle, threads=args.threads, voice_store=store, prefix_cache_mb=0) as cold, \
            Engine.load(args.bundle, threads=args.threads, voice_store=store) as warm:
        voice = warm.voices.add(voiced_sample(args.prompt_seconds), "bench", with_prompt=True,
                                transcript="A short sample of the voice.", sample_rate=24_000)
        prefix_len = 3 + len(voice.transcript.encode()) + voice.prompt_codes.shape[1]  # VOICE, BOS, text, EOT, frames
        first_warm = ttfa(warm, voice, text, args.frames)  # computes and caches the prefix
        off, on = [], []
        for _ in range(args.runs):
            off.append(ttfa(cold, voice, text, args.frames))
            on.append(ttfa(warm, voice, text, args.frames))
        result = {
            "bundle": str(args.bundle), "prompt_frames": int(voice.prompt_codes.shape[1]),
            "prefix_positions": prefix_len, "text_bytes": len(text.encode()), "runs": args.runs,
            "ttfa_cache_off_s": off, "ttfa_cache_on_s": on, "ttfa_first_with_cache_s": first_warm,
            "ttfa_cache_off_p50_s": statistics.median(off), "ttfa_cache_on_p50_s": statistics.median(on),
            "speedup_p50": statistics.median(off) / statistics.median(on),
            "cache_hits": warm.scheduler.prefixes.hits,
        }
    out = json.dumps(result, indent=2)
    print(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
