"""llama.cpp on an Orpheus bundle (tiny random checkpoint): the converted checkpoint's logits agree with
Cadenza's backbone on the same ids, and the orpheus-cpp-style frame loop streams frames through the bundle's
SNAC graph as Orpheus' window decoder does. Skipped without llama-cpp-python and its converter ([peers])."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentencepiece", reason="the converted checkpoint's tokenizer needs sentencepiece: pip install -e .[dev]")
pytest.importorskip("llama_cpp", reason="the llama.cpp peer needs llama-cpp-python: pip install -e .[peers]")


@pytest.fixture(scope="module")
def peers_cache(tmp_path_factory):
    from cadenza.benchmarks import peer_convert as pc

    try:
        pc.llama_cpp_source()
    except pc.PeerError as e:
        pytest.skip(str(e))
    return tmp_path_factory.mktemp("peers_cache")


def test_logits_agree_on_the_same_ids(orpheus_bundle, peers_cache):
    from cadenza.benchmarks.peers import PeerConfig, run_peers

    s = run_peers(str(orpheus_bundle), PeerConfig(["llama.cpp"], threads=1, cache=str(peers_cache), rounds=1, steps=2,
                                                  warm=1, context=6, window=6, batches=[1], agree_prompt=5,
                                                  agree_steps=3))
    a = s["agreement"]["llama.cpp"]
    assert a["cosine_min"] >= 0.99999 and a["argmax_agree"] == 1.0
    assert s["steps"]["1"]["llama.cpp"]["n"] == 2


def test_the_frame_loop_streams_through_the_bundles_snac(orpheus_bundle, peers_cache, monkeypatch):
    from cadenza.benchmarks.baselines import BASELINES, drive
    from cadenza.engine.contract.bundle import Bundle

    monkeypatch.setenv("CADENZA_PEERS_CACHE", str(peers_cache))
    src = BASELINES["llama.cpp"](str(orpheus_bundle), 1)
    try:
        rec = drive(src, "Hello there.", 6, seed=0)
        assert rec.frames == 6 and all(0 <= c < 4096 for f in src.frames for c in f)
        # Orpheus' window: nothing before 4 frames, then one frame of samples per frame
        assert rec.chunk_samples == [src.hop] * 3
        window = np.stack(src.frames[-4:], axis=1)[None]
        pcm = src.codec.run({"codes": np.ascontiguousarray(window)})["pcm"]
        np.testing.assert_array_equal(src.decode(src.frames[-1]), pcm[0, src.hop:2 * src.hop])
    finally:
        src.close()
    assert Bundle.load(orpheus_bundle).layout.kind == "flat"
