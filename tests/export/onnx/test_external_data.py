"""The external-data path (graphs over 2 GB, i.e. the `1b` size), exercised on tiny by lowering the
threshold: weights go to `<role>.onnx.data`, the manifest lists and hashes that file, ONNX Runtime
loads it, and a bundle missing it is refused."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch", reason="export needs torch")


def test_weights_in_external_files(external_bundle):
    from cadenza.engine.contract.bundle import Bundle

    b = Bundle.load(external_bundle)
    for role in ("backbone", "depth", "codec_decode"):
        assert f"{role}.onnx.data" in b.manifest["files"]
        assert (external_bundle / f"{role}.onnx.data").stat().st_size > (external_bundle / f"{role}.onnx").stat().st_size


def test_external_bundle_streams_like_the_inline_one(external_bundle, tiny_bundle):
    from cadenza.engine import Engine

    out = []
    for path in (tiny_bundle, external_bundle):
        with Engine.load(path, max_streams=1) as e:
            s = e.stream("External data.", greedy=True, frames=5)
            out.append((s.read_all(), s.codes))
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_allclose(out[0][0], out[1][0], atol=1e-6)


def test_missing_external_data_is_a_bundle_error(external_bundle, tmp_path):
    from cadenza.engine.contract.bundle import Bundle, BundleError

    broken = shutil.copytree(external_bundle, tmp_path / "b")
    (broken / "backbone.onnx.data").unlink()
    with pytest.raises(BundleError, match="backbone.onnx.data"):
        Bundle.load(broken)
