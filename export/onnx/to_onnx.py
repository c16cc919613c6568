"""PyTorch model -> bundle directory (one ONNX graph per role + manifest.json).

The build is a chain of steps: `build_model` (size/seed or a weights
directory) -> `to_onnx(model, out)` -> the bundle directory.
"""
from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import onnx
import torch

from cadenza.engine.contract import text as tok
from cadenza.engine.contract.layout import TokenLayout
from cadenza.engine.contract.length import LengthPolicy
from cadenza.engine.contract.prompt import reference_template

from ..model.config import TTSConfig
from ..model.model import TTSModel
from ..model.transformer import Attention
from .graphs import graph_specs
from .manifest import OPSET, write_manifest
from .quantize import QUANTIZED_ROLES, quantize_graph
from .spec import GraphSpec

EXTERNAL_DATA_BYTES = 1 << 30  # graphs whose weights exceed 1 GiB keep them in `<role>.onnx.data`
FAMILY = "cadenza-reference"


def build_model(size: str = "tiny", seed: int = 0, weights: str | Path | None = None, **overrides) -> TTSModel:
    """The reference model: seeded random init of a named size, or trained weights from a directory."""
    if weights is not None:
        return TTSModel.load(weights)
    return TTSModel.from_config(TTSConfig.from_name(size, seed=seed, **overrides))


def _dynamic_axes(spec: GraphSpec) -> dict:
    axes = {}
    for t in spec.inputs + spec.outputs:
        dims = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        if dims:
            axes[t.name] = dims
    return axes


def export_graph(spec: GraphSpec, path: Path, param_bytes: int) -> list[str]:
    """Export one role to `path`; returns the files written (relative names).

    The tracer writes into a scratch directory (over 2 GB it scatters one file per
    tensor there); the graph is then saved into the bundle inline, or with all its
    weights in one `<role>.onnx.data` file.
    """
    attention = [m for m in spec.module.modules() if isinstance(m, Attention)]
    for m in attention:
        m.trim_past = True
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
            traced = Path(scratch) / path.name
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation + tracer notes
                torch.onnx.export(
                    spec.module, spec.example, str(traced), dynamo=False, opset_version=OPSET,
                    input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                    dynamic_axes=_dynamic_axes(spec), do_constant_folding=True)
            proto = onnx.load(str(traced))  # with any scattered external tensors
    finally:
        for m in attention:
            m.trim_past = False
    _declare_outputs(proto, spec)
    files = [path.name]
    data = path.parent / (path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file: start clean on re-export
    if param_bytes > EXTERNAL_DATA_BYTES:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        files.append(path.name + ".data")
    else:
        onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path))
    return files


def _declare_outputs(proto: onnx.ModelProto, spec: GraphSpec) -> None:
    """Declare output shapes exactly as the manifest does (the tracer invents names for fixed dims)."""
    want = {t.name: t.shape for t in spec.outputs}
    for vi in proto.graph.output:
        dims = vi.type.tensor_type.shape.dim
        for d, s in zip(dims, want[vi.name]):
            if isinstance(s, int):
                d.dim_value = s
            else:
                d.dim_param = s


def reference_blocks(cfg: TTSConfig) -> dict:
    """The manifest blocks of the reference family (see `cadenza.engine.contract`)."""
    b, d = cfg.backbone, cfg.depth
    constants = {
        "sample_rate": cfg.codec.sample_rate, "hop": cfg.codec.hop, "frame_rate": cfg.codec.frame_rate,
        "n_codebooks": cfg.n_codebooks, "codebook_size": cfg.codebook_size,
        "speaker_dim": cfg.speaker_dim, "max_seq_len": b.max_seq_len, "backbone_dim": b.dim,
        "backbone_layers": b.n_layers, "kv_heads": b.n_kv_heads, "head_dim": b.head_dim,
        "depth_layers": d.n_layers if cfg.n_codebooks > 1 else 0, "depth_kv_heads": d.n_kv_heads,
        "depth_head_dim": d.head_dim,
    }
    return {"constants": constants, "layout": TokenLayout.reference(cfg.n_codebooks, cfg.codebook_size).to_dict(),
            "prompt": reference_template().to_dict(), "length": LengthPolicy().to_dict(),
            "codec": {"kind": "stateful"}, "sampling": {},
            "tokenizer": {"type": "utf8-bytes", "special_tokens": tok.SPECIAL_TOKENS}}


def graph_entry(spec: GraphSpec, written: list[str], precision: str = "fp32") -> dict:
    """A graph's manifest entry: its file and external data, names, dims, KV and state tensors."""
    return {"file": written[0], "data": written[1:], "inputs": [t.to_dict() for t in spec.inputs],
            "outputs": [t.to_dict() for t in spec.outputs], "kv": spec.kv, "state": spec.state,
            "opset": OPSET, "precision": precision}


def to_onnx(model: TTSModel, out: str | Path, progress: Callable[[str], None] | None = print,
            with_weights: bool = True, random_weights: bool = True, precision: str = "fp32") -> Path:
    """Export every graph role of `model` into the bundle directory `out`.

    Args:
        model: the reference model (eval mode).
        out: bundle directory (created; existing graphs are overwritten).
        progress: called with one line per step (None: silent).
        random_weights: record in the manifest that the weights are random (the model does not speak).
        precision: "fp32", or "int8" for int8 weights in the transformer graphs (`quantize.py`).
        with_weights: also store the PyTorch weights (`weights/`), used by the
            torch backend and the torch-eager baseline on the same weights.
    Returns:
        The bundle directory.
    Example:
        >>> to_onnx(build_model("tiny"), "bundles/tiny")
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda s: None)
    cfg = model.cfg
    specs = graph_specs(model)
    files: list[str] = []
    graphs: dict = {}
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        param_bytes = sum(p.numel() * p.element_size() for p in spec.module.parameters())
        say(f"[{i}/{len(specs)}] exporting {spec.role} ({param_bytes / 1e6:.1f} MB of weights) ...")
        written = export_graph(spec, out / f"{spec.role}.onnx", param_bytes)
        role_precision = "fp32"
        if precision == "int8" and spec.role in QUANTIZED_ROLES and len(written) == 1:
            quantize_graph(out / written[0])
            role_precision = "int8 weights"
        files += written
        graphs[spec.role] = graph_entry(spec, written, role_precision)
        say(f"      {spec.role} done in {time.perf_counter() - t0:.1f} s")
    if with_weights:
        model.save(out / "weights")
        files += ["weights/model.safetensors", "weights/config.json"]
    note = "random weights: exercises the engine, does not speak" if random_weights else "trained weights"
    return write_manifest(out, FAMILY, reference_blocks(cfg), graphs, files, size=cfg.name, config=cfg.to_dict(),
                          precision=precision, random_weights=random_weights, note=note)


def main_export(size: str, seed: int, out: str, weights: str | None = None, precision: str = "fp32",
                **overrides) -> Path:
    """`cadenza export`: build (or load) the model and write the bundle, reporting progress on stderr."""
    t0 = time.perf_counter()
    model = build_model(size, seed, weights, **overrides)
    n = sum(p.numel() for p in model.parameters())
    print(f"model {model.cfg.name}: {n / 1e6:.1f} M parameters (seed {model.cfg.seed})", file=sys.stderr)
    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    path = to_onnx(model, out, progress=lambda s: print(s, file=sys.stderr), random_weights=weights is None,
                   precision=precision)
    size_mb = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()) / 1e6
    print(f"bundle {out}: {size_mb:.1f} MB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path
