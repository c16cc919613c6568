"""Fixtures of the voice tests: the tiny bundle, an engine with a temporary store, and stored voices."""
from __future__ import annotations


import pytest

from cadenza.engine import Engine
from cadenza.engine.contract.bundle import Bundle
from audio_samples import voiced, wav_bytes
from support import SR


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Bundle:
    return Bundle.load(tiny_bundle)

@pytest.fixture(scope="module")
def engine(bundle, tmp_path_factory):
    """An engine whose voice store is a temporary directory (never the user's)."""
    e = Engine.load(bundle, threads=1, max_streams=2, voice_store=tmp_path_factory.mktemp("store"))
    yield e
    e.close()

@pytest.fixture(scope="module")
def voices(engine) -> dict:
    """Two samples, each stored with and without a prompt: a, a_p, b, b_p."""
    out = {}
    for key, seed, f0 in (("a", 0, 140.0), ("b", 1, 220.0)):
        out[key] = engine.voices.add(wav_bytes(voiced(seed=seed, f0=f0), SR), key)
        out[key + "_p"] = engine.voices.add(wav_bytes(voiced(seed=seed, f0=f0), SR), key + "_p", with_prompt=True,
                                            transcript=f"sample {key}")
    return out
