"""End to end: a greedy loop over the ONNX graphs equals the eager reference `generate()`.

The loop below is driven only by the bundle's manifest (tensor names, the KV
name patterns, constants) and uses a preallocated cache written in place, the
way the runtime does; its codes must equal `cadenza.export.reference.generate`
exactly, for K = 4 (with the depth decoder) and K = 1 (without).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cadenza.engine.contract import text as tok  # noqa: E402
from cadenza.engine.contract.length import LengthPolicy
from cadenza.export.reference import generate  # noqa: E402

TEXTS = [pytest.param("Hello world.", id="short"), pytest.param("Zoë says: ça va? Fine, thanks!", id="utf8")]


def _cache(kv: dict, length: int) -> dict:
    shape = (1, kv["kv_heads"], length, kv["head_dim"])
    return {kv[f"past_{kind}"] % l: np.zeros(shape, np.float32)
            for l in range(kv["layers"]) for kind in ("key", "value")}


def _write(cache: dict, kv: dict, out: dict, at: int, n: int) -> None:
    """Copy the n new entries of every layer into the cache at [at, at + n)."""
    for l in range(kv["layers"]):
        for kind in ("key", "value"):
            cache[kv[f"past_{kind}"] % l][:, :, at:at + n] = out[kv[f"new_{kind}"] % l][:, :, :n]


def onnx_greedy(ort_bundle, text: str, frames: int | None = None) -> np.ndarray:
    m = json.loads((ort_bundle.path / "manifest.json").read_text())
    c, graphs = m["constants"], m["graphs"]
    text = tok.check_text(text)
    ids = np.array([tok.prompt_tokens(text)], np.int64)  # [1, P]
    P = ids.shape[1]
    lo, hi = LengthPolicy(**m["length"]).bounds(text, c["frame_rate"])
    eos = m["layout"]["eos_column"]
    if frames is not None:
        lo = hi = frames
    kv = graphs["backbone_prefill"]["kv"]
    cache = _cache(kv, P + hi)
    out = ort_bundle.run("backbone_prefill", {
        "tokens": ids, "voice": np.zeros((1, c["speaker_dim"]), np.float32),
        "lengths": np.array([P]), "start": np.array([0]), **cache})
    _write(cache, kv, out, 0, P)
    frames_out = []
    for f in range(hi):
        logits = out["logits"][0].copy()
        if f < lo:
            logits[eos] = -np.inf
        c0 = int(logits.argmax())
        if c0 == eos:
            break
        frame = [c0] + _depth(ort_bundle, graphs, c, out["hidden"], c0)
        frames_out.append(frame)
        if f + 1 == hi:
            break
        pos = P + f
        out = ort_bundle.run("backbone_step", {"codes": np.array([frame], np.int64), "positions": np.array([pos]),
                                               **cache})
        _write(cache, graphs["backbone_step"]["kv"], out, pos, 1)
    return np.array(frames_out, np.int64).reshape(-1, c["n_codebooks"]).T


def _depth(ort_bundle, graphs, c, hidden, c0) -> list[int]:
    if c["n_codebooks"] == 1:
        assert "depth_step" not in graphs
        return []
    kv = graphs["depth_step"]["kv"]
    cache = _cache(kv, c["n_codebooks"] - 1)
    prev, codes = c0, []
    for p in range(c["n_codebooks"] - 1):
        out = ort_bundle.run("depth_step", {"hidden": hidden, "prev_code": np.array([prev]),
                                            "depth_pos": np.array([p]), **cache})
        _write(cache, kv, out, p, 1)
        prev = int(out["logits"][0].argmax())
        codes.append(prev)
    return codes


@pytest.mark.parametrize("text", TEXTS)
def test_onnx_greedy_equals_reference(text, tiny_model, tiny_ort):
    ref = generate(tiny_model, text).numpy()
    got = onnx_greedy(tiny_ort, text)
    assert got.shape == ref.shape and ref.shape[1] > 0
    np.testing.assert_array_equal(got, ref)


def test_onnx_greedy_equals_reference_k1(tiny_model_k1, tiny_ort_k1):
    ref = generate(tiny_model_k1, "Hello world.", frames=12).numpy()
    got = onnx_greedy(tiny_ort_k1, "Hello world.", frames=12)
    assert ref.shape == (1, 12)
    np.testing.assert_array_equal(got, ref)
