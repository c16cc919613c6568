"""PyTorch model -> bundle directory (one ONNX graph per role + manifest.json).

The build is a chain of steps: `build_model` (size/seed or a weights
directory) -> `to_onnx(model, out)` -> the bundle directory. The transformer
stacks become the `backbone` / `depth` roles (`export_stacks`: fused or portable,
see `stack.py`); the codec and speaker encoder are traced (`export_graph`).
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
from .fused import PRECISIONS, FusedOptions, build_backbone, build_depth, build_head
from .graphs import codec_specs, reference_parts
from .manifest import OPSET, write_manifest
from .quantize import quantize_graph
from .spec import GraphSpec
from .stack import BackboneParts, DepthParts, head_specs, portable_specs

EXTERNAL_DATA_BYTES = 1 << 30  # graphs whose weights exceed 1 GiB keep them in `<role>.onnx.data`
# Fused stacks keep their weights beside the graph from 32 MiB on: the engine then hands ONNX Runtime the
# verified weight bytes as they are (one copy, plus the kernels' prepacked layouts), where an inline graph
# is parsed into further copies (small fp32: engine peak RSS 970 MiB external vs 1213 MiB inline).
STACK_EXTERNAL_BYTES = 32 << 20
FAMILY = "cadenza-reference"
FORMS = ("fused", "portable")


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
    data = path.parent / (path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file: start clean on re-export
    if param_bytes > EXTERNAL_DATA_BYTES:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))
    return _check(path)


def _check(path: Path) -> list[str]:
    """Check the saved graph; returns its files (the graph, and its external data if any)."""
    onnx.checker.check_model(str(path))
    data = path.parent / (path.name + ".data")
    return [path.name] + ([data.name] if data.exists() else [])


def _stack_bytes(parts, role: str) -> int:
    """fp32 bytes of the weights one role holds."""
    if role.startswith("head."):
        lo, hi = parts.heads[int(role.split(".")[1])]
        return 4 * (hi - lo) * parts.head.shape[1]
    own = (parts.head.numel() if parts.heads is None else 0) if isinstance(parts, BackboneParts) else \
        parts.heads.numel() + parts.in_proj.numel()
    return 4 * (sum(p.numel() for p in parts.body.parameters()) + parts.table.numel() + own)


def export_stacks(backbone: BackboneParts, depth: DepthParts | None, out: Path, speaker_dim: int,
                  form: str = "fused", precision: str = "fp32", block_size: int = 32,
                  say: Callable[[str], None] = lambda s: None) -> tuple[dict, list[str]]:
    """Write the `backbone` (and `depth`) roles; returns (their manifest entries, their files).

    form "fused": ONNX Runtime's fused operators, precision fp32 / fp16 / int8 / int4 (`fused.py`);
    "portable": standard operators (traced), precision fp32 or int8 (dynamic, per tensor).
    """
    if form not in FORMS:
        raise ValueError(f"graphs must be one of {FORMS}, got {form!r}")
    if form == "portable" and precision not in ("fp32", "int8"):
        raise ValueError(f"portable graphs come in fp32 or int8 (standard operators); {precision} needs --graphs fused")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    graphs, files = {}, []
    stacks = [("backbone", backbone)] + ([("depth", depth)] if depth is not None else [])
    stacks += [(f"head.{j}", backbone) for j in range(len(backbone.heads or ()))]
    portable = {s.role: s for s in portable_specs(backbone, depth, speaker_dim) + head_specs(backbone)} \
        if form == "portable" else {}
    for role, parts in stacks:
        t0 = time.perf_counter()
        path, nbytes = out / f"{role}.onnx", _stack_bytes(parts, role)
        say(f"exporting {role} ({nbytes / 1e6:.1f} MB of fp32 weights, {form}, {precision}) ...")
        data = path.parent / (path.name + ".data")
        data.unlink(missing_ok=True)
        if form == "portable":
            spec = portable[role]
            written = export_graph(spec, path, nbytes)
            if precision == "int8":
                if len(written) > 1:
                    raise ValueError("portable int8 needs graphs under 1 GiB; use --graphs fused for large models")
                quantize_graph(path)
            entry = graph_entry(spec, written, precision)
        else:
            opts = FusedOptions(precision, block_size)
            keep = data if nbytes > min(STACK_EXTERNAL_BYTES, EXTERNAL_DATA_BYTES) else None
            if role == "backbone":
                model, ins, outs, kv, _ = build_backbone(parts, speaker_dim, opts, keep)
            elif role == "depth":
                model, ins, outs, kv, _ = build_depth(parts, backbone.body.cfg.dim, opts, keep)
            else:
                model, ins, outs, kv, _ = build_head(parts, int(role.split(".")[1]), opts, keep)
            onnx.save_model(model, str(path))
            del model
            written = _check(path)
            extra = {"embedding": parts.embedding} if kv else {}
            entry = graph_entry(GraphSpec(role, None, ins, outs, (), kv, extra=extra), written, precision)
            if opts.bits:
                entry["block_size"] = block_size
        entry["form"] = form
        graphs[role] = entry
        files += written
        say(f"      {role} done in {time.perf_counter() - t0:.1f} s")
    return graphs, files


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
            "precision": precision, **spec.extra}


def to_onnx(model: TTSModel, out: str | Path, progress: Callable[[str], None] | None = print,
            torch_weights: bool = False, random_weights: bool = True, form: str = "fused",
            precision: str = "fp32", block_size: int = 32) -> Path:
    """Export every graph role of `model` into the bundle directory `out`.

    Args:
        model: the reference model (eval mode).
        out: bundle directory (created; existing graphs are overwritten).
        progress: called with one line per step (None: silent).
        torch_weights: also store the PyTorch weights (`weights/`), for the torch backends and
            the torch-eager baseline on the same weights.
        random_weights: record in the manifest that the weights are random (the model does not speak).
        form: "fused" (ONNX Runtime's fused operators) or "portable" (standard operators).
        precision: fp32 / fp16 / int8 / int4 for the transformer stacks (`export_stacks`).
        block_size: the quantisation block of int8 / int4.
    Returns:
        The bundle directory.
    Example:
        >>> to_onnx(build_model("tiny"), "bundles/tiny")
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda s: None)
    cfg = model.cfg
    backbone, depth = reference_parts(model)
    graphs, files = export_stacks(backbone, depth, out, cfg.speaker_dim, form, precision, block_size, say)
    for spec in codec_specs(model):
        t0 = time.perf_counter()
        param_bytes = sum(p.numel() * p.element_size() for p in spec.module.parameters())
        say(f"exporting {spec.role} ({param_bytes / 1e6:.1f} MB of weights) ...")
        written = export_graph(spec, out / f"{spec.role}.onnx", param_bytes)
        files += written
        graphs[spec.role] = graph_entry(spec, written)
        say(f"      {spec.role} done in {time.perf_counter() - t0:.1f} s")
    if torch_weights:
        model.save(out / "weights")
        files += ["weights/model.safetensors", "weights/config.json"]
    note = "random weights: exercises the engine, does not speak" if random_weights else "trained weights"
    return write_manifest(out, FAMILY, reference_blocks(cfg), graphs, files, size=cfg.name, config=cfg.to_dict(),
                          precision=precision, graphs_form=form, random_weights=random_weights, note=note)


def main_export(size: str, seed: int, out: str, weights: str | None = None, precision: str = "fp32",
                form: str = "fused", block_size: int = 32, torch_weights: bool = False, **overrides) -> Path:
    """`cadenza export`: build (or load) the model and write the bundle, reporting progress on stderr."""
    t0 = time.perf_counter()
    model = build_model(size, seed, weights, **overrides)
    n = sum(p.numel() for p in model.parameters())
    print(f"model {model.cfg.name}: {n / 1e6:.1f} M parameters (seed {model.cfg.seed})", file=sys.stderr)
    path = to_onnx(model, out, progress=lambda s: print(s, file=sys.stderr), torch_weights=torch_weights,
                   random_weights=weights is None, form=form, precision=precision, block_size=block_size)
    size_mb = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()) / 1e6
    print(f"bundle {out}: {size_mb:.1f} MB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path
