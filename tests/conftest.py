"""Shared session-scoped fixtures: the seeded tiny models and their exported bundles.

Exporting takes a few seconds, so each bundle is built once per test session
into a temporary directory. Tests that modify a bundle copy it first
(`shutil.copytree(tiny_bundle, tmp_path / "b")`); the session copies are
read-only by convention.

Nothing here imports torch at module level: run-time tests (tests/engine)
must collect on an install without the `export` extra.
"""
from __future__ import annotations

import os
from pathlib import Path

# Triton picks interpreter or compiler when cadenza.kernels is first imported, which may happen in any
# test module: decide here, before collection. No GPU -> run the kernels in the interpreter on the CPU.
os.environ.setdefault("TRITON_INTERPRET", "0" if os.path.exists("/dev/nvidia0") else "1")

import numpy as np
import pytest


def _export_modules():
    pytest.importorskip("torch", reason="the reference model and exporter need torch: pip install -e .[export]")
    pytest.importorskip("onnx", reason="the exporter needs onnx: pip install -e .[export]")
    from cadenza.export.onnx import graphs, to_onnx

    return graphs, to_onnx


class OrtBundle:
    """ONNX Runtime (CPU) sessions over one bundle directory, created on first use and kept."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._sessions: dict = {}

    def session(self, role: str):
        import onnxruntime as ort

        if role not in self._sessions:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self._sessions[role] = ort.InferenceSession(
                str(self.path / f"{role}.onnx"), opts, providers=["CPUExecutionProvider"])
        return self._sessions[role]

    def run(self, role: str, feeds: dict) -> dict:
        """feeds: input name -> array (numpy or torch CPU); returns output name -> numpy array."""
        sess = self.session(role)
        feeds = {k: np.ascontiguousarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in feeds.items()}
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))


@pytest.fixture(scope="session")
def tiny_model():
    """The `tiny` reference model, seed 0 (K = 4 codebooks)."""
    _, exp = _export_modules()
    return exp.build_model("tiny", 0)


@pytest.fixture(scope="session")
def tiny_model_k1():
    """The `tiny` model with a single codebook (no depth decoder)."""
    _, exp = _export_modules()
    return exp.build_model("tiny", 0, n_codebooks=1)


def _specs(model) -> dict:
    graphs, _ = _export_modules()
    from cadenza.export.onnx.stack import portable_specs

    return {s.role: s for s in [*portable_specs(*graphs.reference_parts(model), model.cfg.speaker_dim),
                                *graphs.codec_specs(model)]}


@pytest.fixture(scope="session")
def tiny_specs(tiny_model) -> dict:
    """role -> GraphSpec (PyTorch module + input/output specs) of `tiny_model`: the portable stacks, the codec."""
    return _specs(tiny_model)


@pytest.fixture(scope="session")
def tiny_specs_k1(tiny_model_k1) -> dict:
    return _specs(tiny_model_k1)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model, tmp_path_factory) -> Path:
    """`tiny_model` exported once per session: fused graphs, with its PyTorch weights (read-only: copy it
    before tampering)."""
    _, exp = _export_modules()
    return exp.to_onnx(tiny_model, tmp_path_factory.mktemp("tiny_bundle"), progress=None, torch_weights=True)


@pytest.fixture(scope="session")
def tiny_bundle_portable(tiny_model, tmp_path_factory) -> Path:
    """`tiny_model` in standard ONNX operators (read-only)."""
    _, exp = _export_modules()
    return exp.to_onnx(tiny_model, tmp_path_factory.mktemp("tiny_portable"), progress=None, form="portable")


@pytest.fixture(scope="session")
def tiny_bundle_k1(tiny_model_k1, tmp_path_factory) -> Path:
    """`tiny_model_k1` exported once per session (read-only)."""
    _, exp = _export_modules()
    return exp.to_onnx(tiny_model_k1, tmp_path_factory.mktemp("tiny_bundle_k1"), progress=None, torch_weights=True)


@pytest.fixture(scope="session")
def tiny_ort(tiny_bundle_portable) -> OrtBundle:
    """ONNX Runtime CPU sessions over the portable `tiny` bundle (graphs with the wrappers' signatures)."""
    return OrtBundle(tiny_bundle_portable)


@pytest.fixture(scope="session")
def tiny_ort_k1(tiny_bundle_k1) -> OrtBundle:
    return OrtBundle(tiny_bundle_k1)


@pytest.fixture(scope="session")
def external_bundle(tmp_path_factory, tiny_model) -> Path:
    """`tiny_model` exported with every graph's weights in `<role>.onnx.data` (the `1b` path, on tiny)."""
    _, exp = _export_modules()
    mp = pytest.MonkeyPatch()
    mp.setattr(exp, "EXTERNAL_DATA_BYTES", 0)
    try:
        return exp.to_onnx(tiny_model, tmp_path_factory.mktemp("external_bundle"), progress=None)
    finally:
        mp.undo()  # at once: later exports of the session write inline graphs again
