"""Model families: one module per family, and the registry `cadenza export --family` reads.

| family | checkpoint (loaded with the family's own classes) | layout | codec |
| --- | --- | --- | --- |
| `cadenza` | Cadenza's reference model (`cadenza.export.model`), random or trained weights | depth | causal, carried state |
| `orpheus` | `transformers.LlamaForCausalLM` + `snac.SNAC` | flat, 7 tokens per frame | SNAC, windowed |
| `csm` | `transformers.CsmForConditionalGeneration` (Mimi inside) | depth, K = 32 | Mimi, carried state |

Each family module offers `load(checkpoint, codec)`, `parts(...)` (its transformer stacks
for `cadenza.export.onnx.stack`), `codec_specs(...)` (its codec graphs), `blocks(...)` (the
manifest's family-specific blocks) and `source(...)`; `export_family` chains them into a
bundle.
"""
from __future__ import annotations

import importlib
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

FAMILIES = ("cadenza", "orpheus", "csm")


def export_family(family: str, checkpoint: str, out: str | Path, codec: str | None = None, *,
                  max_seq_len: int = 2048, window: tuple[int, int] = (3, 3), form: str = "fused",
                  precision: str = "fp32", block_size: int = 32,
                  progress: Callable[[str], None] | None = None) -> Path:
    """Load a family's checkpoint and write its bundle (graphs, tokenizer.json, manifest)."""
    from ..onnx.manifest import write_manifest
    from ..onnx.to_onnx import export_graph, export_stacks, graph_entry
    from .checkpoint import provenance

    say = progress or (lambda s: None)
    mod = importlib.import_module(f"{__name__}.{family}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, tokenizer_file, codec_model = mod.load(checkpoint, codec)
    say(f"loaded {family} checkpoint {checkpoint} in {time.perf_counter() - t0:.1f} s")
    backbone, depth = mod.parts(model, max_seq_len)
    graphs, files = export_stacks(backbone, depth, out, 0, form, precision, block_size, say)
    del backbone, depth
    for spec in mod.codec_specs(model, codec_model):
        t1 = time.perf_counter()
        param_bytes = sum(p.numel() * p.element_size() for p in spec.module.parameters())
        param_bytes += sum(b.numel() * b.element_size() for b in spec.module.buffers())
        say(f"exporting {spec.role} ({param_bytes / 1e6:.1f} MB of weights) ...")
        written = export_graph(spec, out / f"{spec.role}.onnx", param_bytes)
        graphs[spec.role] = graph_entry(spec, written)
        files += written
        say(f"      {spec.role} done in {time.perf_counter() - t1:.1f} s")
    shutil.copyfile(tokenizer_file, out / "tokenizer.json")
    files.append("tokenizer.json")
    blocks = mod.blocks(model, "tokenizer.json", max_seq_len, window)
    return write_manifest(out, mod.FAMILY, blocks, graphs, files,
                          source=mod.source(provenance(checkpoint), codec and provenance(codec), model),
                          precision=precision, graphs_form=form, random_weights=False,
                          note=f"exported from {checkpoint}: the checkpoint's own weights")


def main_family_export(family: str, checkpoint: str, out: str, codec: str | None = None, **kwargs) -> Path:
    """`cadenza export --family F --checkpoint C`: progress on stderr."""
    t0 = time.perf_counter()
    path = export_family(family, checkpoint, out, codec, progress=lambda s: print(s, file=sys.stderr), **kwargs)
    size_mb = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()) / 1e6
    print(f"bundle {out}: {size_mb:.1f} MB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path
