"""A bundle's `manifest.json`: written once every graph and file of the bundle is in place.

Every family's exporter ends here: the family's blocks (constants, layout, prompt,
length, codec, sampling defaults, tokenizer), the graphs' entries, library
versions, a SHA-256 of every file, and the hash of the manifest's own content.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

from cadenza.engine.contract.bundle import FORMAT_VERSION, MANIFEST, Bundle, content_hash, sha256_file

OPSET = 17


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "exporter": "torch.onnx.export (TorchScript tracer)",
            "opset": OPSET}


def write_manifest(out: Path, family: str, blocks: dict, graphs: dict, files: list[str], **extra) -> Path:
    """Write `out/manifest.json` and check that the engine reads it back.

    Args:
        family: the model family ("cadenza-reference", "orpheus", "csm").
        blocks: constants, layout, prompt, length, codec, sampling, tokenizer (see `cadenza.engine.contract`).
        graphs: role -> its entry (file, data, inputs, outputs, kv, state, opset, precision).
        files: every file of the bundle, relative to `out` (each gets a SHA-256).
        extra: further top-level entries (config, precision, random_weights, source, note, ...).
    """
    manifest = {"format_version": FORMAT_VERSION, "family": family, **blocks, "graphs": graphs,
                "versions": versions(), "files": {f: sha256_file(out / f) for f in files}, **extra}
    manifest["content_sha256"] = content_hash(manifest)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    Bundle.load(out, verify=False)  # what the engine will read: every block typed and checked
    return out
