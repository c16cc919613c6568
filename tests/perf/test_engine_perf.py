"""pytest-benchmark suite: one engine step and one whole stream on the tiny bundle.

For projects that gate with pytest-benchmark rather than `cadenza gate`
(see docs/ci-recipe.md). The default `pytest` run calls each benchmark once
(`--benchmark-disable` in pyproject.toml), as a smoke test; time them with:

    pytest tests/perf --benchmark-enable --benchmark-only                      # print the table
    pytest tests/perf --benchmark-enable --benchmark-only --benchmark-autosave # store .benchmarks/<machine>/NNNN_*.json
    pytest tests/perf --benchmark-enable --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

The bundle: $CADENZA_BENCH_BUNDLE, else bundles/tiny, else a tiny bundle
exported into a temporary directory (needs the [export] extra). Threads:
$CADENZA_BENCH_THREADS (default 1, the steadiest on a shared machine).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cadenza.engine.backends.ort.generator import OrtGenerator
from cadenza.engine.contract import text as tok
from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.runtime.generator import PrefillItem, Row
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler

TEXT = "Hello from Cadenza. This sentence is the benchmark's prompt."
THREADS = int(os.environ.get("CADENZA_BENCH_THREADS", "1"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    env = os.environ.get("CADENZA_BENCH_BUNDLE")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "bundles" / "tiny"
    if not (path / "manifest.json").is_file():
        pytest.importorskip("torch", reason="no tiny bundle and no torch to export one: set CADENZA_BENCH_BUNDLE")
        from cadenza.export.onnx.to_onnx import build_model, to_onnx

        path = to_onnx(build_model("tiny", 0), tmp_path_factory.mktemp("tiny"), progress=None)
    return Bundle.load(path)


def _info(benchmark, bundle: Bundle, **extra) -> None:
    benchmark.extra_info.update(bundle=bundle.manifest.get("size"), bundle_hash=bundle.hash[:12], device="cpu",
                                threads=THREADS, batch=1, **extra)


def test_engine_step(benchmark, bundle):
    """One frame of one stream: sample codebook 0, the depth steps, one backbone step (batch 1)."""
    c = bundle.constants
    max_len = min(256, c.max_seq_len)
    gen = OrtGenerator(bundle, slots=1, max_len=max_len, threads=THREADS)
    prompt = tok.prompt_tokens(TEXT)
    row = Row(StreamSampler(SamplingParams(seed=0), c.n_codebooks), forced=True, max_frames=max_len)
    gen.add(row)
    gen.prefill([PrefillItem(row, prompt, np.zeros(c.speaker_dim, np.float32))])

    def step():
        if row.position >= max_len - 1:  # stay inside the slot: rewind to just after the prompt
            row.position = len(prompt)
        gen.frame()
        gen.step()

    try:
        benchmark(step)
    finally:
        gen.close()
    _info(benchmark, bundle, what="OrtGenerator.frame() + step(), cache positions prompt..256")


def test_stream(benchmark, bundle):
    """One whole forced-length stream through the public API (24 frames, 1.92 s of audio)."""
    from cadenza.engine import Engine

    with Engine.load(bundle, threads=THREADS, max_streams=1) as engine:
        engine.synthesize(TEXT, frames=24, seed=0)  # warm-up
        pcm = benchmark(lambda: engine.stream(TEXT, frames=24, seed=0).read_all())
    assert len(pcm) == 24 * bundle.constants.hop
    _info(benchmark, bundle, what="Engine.stream(frames=24).read_all()", audio_s=len(pcm) / bundle.constants.sample_rate)
