"""int8-weight bundles: smaller, still stream, and keep the fp32 logits' direction."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="export needs torch")


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, tiny_model):
    from cadenza.export.onnx.to_onnx import to_onnx

    return to_onnx(tiny_model, tmp_path_factory.mktemp("int8"), progress=None, precision="int8")


def test_manifest_and_sizes(int8_bundle, tiny_bundle):
    m = json.loads((int8_bundle / "manifest.json").read_text())
    assert m["precision"] == "int8"
    assert m["graphs"]["backbone_step"]["precision"] == "int8 weights"
    assert m["graphs"]["codec_decode"]["precision"] == "fp32"
    size = lambda b, role: (b / f"{role}.onnx").stat().st_size
    for role in ("backbone_prefill", "backbone_step"):  # mostly MatMul weights
        assert size(int8_bundle, role) < 0.6 * size(tiny_bundle, role)
    assert size(int8_bundle, "depth_step") < size(tiny_bundle, "depth_step")  # gathered tables stay fp32


def test_step_logits_close_to_fp32(int8_bundle, tiny_bundle):
    """Cosine similarity of step logits > 0.999 (rows at different positions, random cache)."""
    import onnxruntime as ort

    rs = np.random.RandomState(0)
    feeds = None
    outs = []
    for b in (tiny_bundle, int8_bundle):
        s = ort.InferenceSession(str(b / "backbone_step.onnx"), providers=["CPUExecutionProvider"])
        if feeds is None:
            feeds = {"codes": rs.randint(0, 64, (3, 4)).astype(np.int64), "positions": np.array([3, 9, 20])}
            for i in s.get_inputs()[2:]:
                feeds[i.name] = (rs.randn(3, i.shape[1], 24, i.shape[3]) * 0.5).astype(np.float32)
        outs.append(s.run(["logits"], feeds)[0])
    a, q = outs
    cos = (a * q).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(q, axis=1)
    assert cos.min() > 0.999, cos
    assert not np.array_equal(a, q)  # it really is quantised


def test_int8_bundle_streams(int8_bundle):
    from cadenza.engine import Engine

    with Engine.load(int8_bundle, max_streams=2) as e:
        s = e.stream("Quantised weights still stream.", frames=6, greedy=True)
        pcm = s.read_all()
        assert s.codes.shape == (4, 6) and len(pcm) == 6 * e.hop and np.isfinite(pcm).all()
        np.testing.assert_allclose(pcm, e.decode(s.codes), atol=1e-5)
