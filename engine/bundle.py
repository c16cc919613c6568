"""A bundle: one ONNX graph per role plus `manifest.json`, checked on load.

The manifest is the whole contract between build time and run time: tensor
names, symbolic shapes, dtypes, KV and state tensors, model constants and a
SHA-256 of every file. The manifest also carries a hash of its own content,
so an edited manifest is refused like a truncated graph.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REBUILD_HINT = "rebuild it with `cadenza export --size SIZE --out DIR` (or re-run the export that made it)"
ROLES = ("backbone_prefill", "backbone_step", "depth_step", "codec_decode", "codec_encode", "speaker_encode")

from .errors import BundleError  # noqa: F401  (re-exported: cadenza.engine.bundle.BundleError)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_hash(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON, without its own hash field."""
    body = {k: v for k, v in manifest.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class Bundle:
    """A checked bundle directory. `graph(role)` is the manifest entry of one role."""

    path: Path
    manifest: dict

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Bundle":
        """Read and check a bundle.

        Args:
            path: the bundle directory (holding manifest.json).
            verify: hash every file (default). Turn off only for trusted, read-only bundles.
        Raises:
            BundleError: with the file at fault and how to rebuild.
        """
        p = Path(path)
        mpath = p / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{p} is not a Cadenza bundle: no {MANIFEST}; {REBUILD_HINT}")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{mpath} is unreadable ({e}); {REBUILD_HINT}") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{mpath} is not a manifest object; {REBUILD_HINT}")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"{p} has bundle format {version!r}; this Cadenza reads format "
                              f"{FORMAT_VERSION}; {REBUILD_HINT}")
        bundle = cls(p, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check the manifest's own hash and every file's SHA-256."""
        if self.manifest.get("content_sha256") != content_hash(self.manifest):
            raise BundleError(f"{self.path / MANIFEST} was edited after export (content hash mismatch); {REBUILD_HINT}")
        for name, digest in self.manifest["files"].items():
            f = self.path / name
            if not f.is_file():
                raise BundleError(f"{self.path} is missing {name}; {REBUILD_HINT}")
            if sha256_file(f) != digest:
                raise BundleError(f"{f} does not match its manifest hash (truncated or replaced?); {REBUILD_HINT}")

    # --- accessors -------------------------------------------------------
    @property
    def hash(self) -> str:
        """Identifies the exact bundle (weights and graphs): the manifest's content hash."""
        return self.manifest["content_sha256"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def has(self, role: str) -> bool:
        return role in self.manifest["graphs"]

    def graph(self, role: str) -> dict:
        try:
            return self.manifest["graphs"][role]
        except KeyError:
            raise BundleError(f"{self.path} has no {role!r} graph; {REBUILD_HINT}") from None

    def graph_path(self, role: str) -> Path:
        return self.path / self.graph(role)["file"]

    def __getattr__(self, key):
        # model constants: sample_rate, hop, frame_rate, n_codebooks, codebook_size, eos_id, ...
        consts = self.__dict__.get("manifest", {}).get("constants", {})
        if key in consts:
            return consts[key]
        raise AttributeError(key)
