"""End to end: a greedy loop over the ONNX graphs equals the eager reference `generate()`.

The loop below is driven only by the bundle's manifest (tensor names, the KV
name patterns and mode, the embedding rows, constants) and uses a preallocated
cache, the way the runtime does; its codes must equal
`cadenza.export.reference.generate` exactly, for K = 4 (with the depth decoder)
and K = 1 (without), with fused and with portable graphs.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cadenza.engine.contract import text as tok  # noqa: E402
from cadenza.engine.contract.length import LengthPolicy
from cadenza.export.reference import generate  # noqa: E402
from stack_io import run_stack  # noqa: E402

TEXTS = [pytest.param("Hello world.", id="short"), pytest.param("Zoë says: ça va? Fine, thanks!", id="utf8")]


def _cache(kv: dict, length: int) -> np.ndarray:
    return np.zeros((kv["layers"], 2, 1, kv["kv_heads"], length, kv["head_dim"]), np.float32)


def _write(cache: np.ndarray, kv: dict, out: dict, at: int, n: int) -> None:
    """A portable graph's n new entries into the cache at [at, at + n) (a fused graph wrote them itself)."""
    if kv["mode"] == "returned":
        cache[:, :, :, :, at:at + n] = out["new"][:, :, :, :, :n]


def onnx_greedy(ort_bundle, text: str, frames: int | None = None) -> np.ndarray:
    m = json.loads((ort_bundle.path / "manifest.json").read_text())
    c, graphs = m["constants"], m["graphs"]
    emb = graphs["backbone"]["embedding"]
    text = tok.check_text(text)
    tokens = tok.prompt_tokens(text)
    P, K = len(tokens), c["n_codebooks"]
    ids = np.full((1, P, emb["slots"]), emb["null_row"], np.int64)
    ids[0, :, 0] = emb["text_offset"] + np.array(tokens)
    lo, hi = LengthPolicy(**m["length"]).bounds(text, c["frame_rate"])
    eos = m["layout"]["eos_column"]
    if frames is not None:
        lo = hi = frames
    kv = graphs["backbone"]["kv"]
    cache = _cache(kv, P + hi)
    run = lambda feeds: run_stack(ort_bundle.session("backbone"), graphs["backbone"], feeds, cache)  # noqa: E731
    out = run({"ids": ids, "voice": np.zeros((1, c["speaker_dim"]), np.float32),
               "seqlens_k": np.array([P - 1], np.int32), "query_seqlens": np.array([P], np.int32)})
    _write(cache, kv, out, 0, P)
    frames_out = []
    for f in range(hi):
        logits = out["logits"][0].copy()
        if f < lo:
            logits[eos] = -np.inf
        c0 = int(logits.argmax())
        if c0 == eos:
            break
        frame = [c0] + _depth(ort_bundle, graphs, c, out.get("hidden"), c0)
        frames_out.append(frame)
        if f + 1 == hi:
            break
        pos = P + f
        step = (np.array(frame) + np.array(emb["code_offsets"]))[None, None, :]
        out = run({"ids": step, "voice": np.zeros((1, c["speaker_dim"]), np.float32),
                   "seqlens_k": np.array([pos], np.int32), "query_seqlens": np.array([1], np.int32)})
        _write(cache, kv, out, pos, 1)
    return np.array(frames_out, np.int64).reshape(-1, K).T


def _depth(ort_bundle, graphs, c, hidden, c0) -> list[int]:
    if c["n_codebooks"] == 1:
        assert "depth" not in graphs
        return []
    entry = graphs["depth"]
    kv, offsets = entry["kv"], entry["embedding"]["offsets"]
    cache = _cache(kv, c["n_codebooks"] - 1)
    prev, codes = c0, []
    for p in range(c["n_codebooks"] - 1):
        out = run_stack(ort_bundle.session("depth"), entry, {"hidden": hidden, "ids": np.array([offsets[p] + prev]),
                                                             "depth_pos": np.array([p])}, cache)
        _write(cache, kv, out, p, 1)
        prev = int(out["logits"][0].argmax())
        codes.append(prev)
    return codes


@pytest.fixture(params=["fused", "portable"])
def tiny_graphs(request, tiny_bundle, tiny_bundle_portable):
    from conftest import OrtBundle

    return OrtBundle(tiny_bundle if request.param == "fused" else tiny_bundle_portable)


@pytest.mark.parametrize("text", TEXTS)
def test_onnx_greedy_equals_reference(text, tiny_model, tiny_graphs):
    ref = generate(tiny_model, text).numpy()
    got = onnx_greedy(tiny_graphs, text)
    assert got.shape == ref.shape and ref.shape[1] > 0
    np.testing.assert_array_equal(got, ref)


def test_onnx_greedy_equals_reference_k1(tiny_model_k1, tiny_ort_k1):
    ref = generate(tiny_model_k1, "Hello world.", frames=12).numpy()
    got = onnx_greedy(tiny_ort_k1, "Hello world.", frames=12)
    assert ref.shape == (1, 12)
    np.testing.assert_array_equal(got, ref)
