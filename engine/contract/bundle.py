"""A bundle: one ONNX graph per role plus `manifest.json`, checked on load.

The manifest is the whole contract between build time and run time: tensor
names, symbolic shapes, dtypes, KV and state tensors, model constants and a
SHA-256 of every file, plus a hash of the manifest's own content.

Trust: the hashes detect accidents and damage in transit (a truncated copy, a
half-written file, a manifest edited by hand); anyone who can write the bundle
can recompute them, so they do not authenticate its author. A signature
(`signing.py`) does, when the operator configures a key. Whatever the author, a
bundle cannot make the engine read outside its directory (`files.py`, every path
checked, external data included), nor allocate from absurd sizes (`validate.py`),
and the graph bytes ONNX Runtime runs are the bytes that were hashed (`graph_io.py`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError
from . import signing, validate
from .constants import CodecSpec, ModelConstants
from .files import open_inside, read_verified, sha256_fd
from .layout import TokenLayout
from .length import LengthPolicy
from .prompt import ByteTokenizer, FileTokenizer, PromptTemplate
from .stack import DepthEmbedding, Embedding

FORMAT_VERSION = 3
MANIFEST = "manifest.json"
REBUILD_HINT = "rebuild it with `cadenza export --size SIZE --out DIR` (or re-run the export that made it)"
ROLES = ("backbone", "depth", "codec_decode", "codec_encode", "speaker_encode")
HEAD_ROLE = re.compile(r"head\.[0-9]{1,2}")  # a flat layout's head cut for frame position j


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
    """A checked bundle directory: its manifest's blocks, typed. `graph(role)` is one role's entry."""

    path: Path
    manifest: dict
    constants: ModelConstants = field(init=False)
    layout: TokenLayout = field(init=False)  # how tokens make frames
    prompt: PromptTemplate = field(init=False)
    length: LengthPolicy = field(init=False)
    codec: CodecSpec = field(init=False)
    embedding: Embedding = field(init=False)  # how the backbone's table is addressed
    depth_embedding: DepthEmbedding | None = field(init=False)

    def __post_init__(self):
        where = str(self.path / MANIFEST)
        m = self.manifest
        self.constants = c = ModelConstants.from_manifest(m, where)
        for key in ("layout", "prompt", "length", "graphs", "files"):
            if not isinstance(m.get(key), dict):
                raise BundleError(f"{where} has no {key} block; {REBUILD_HINT}")
        for name, digest in m["files"].items():
            validate.relative_name(name, where)
            if not isinstance(digest, str) or len(digest) != 64:
                raise BundleError(f"{where}: file {name!r} has no SHA-256; {REBUILD_HINT}")
        for role, entry in m["graphs"].items():
            if role not in ROLES and not HEAD_ROLE.fullmatch(str(role)):
                raise BundleError(f"{where}: unknown graph role {str(role)[:40]!r}; {REBUILD_HINT}")
            validate.graph_entry(role, entry, m["constants"], m["files"], where)
        self.layout = TokenLayout.from_dict(m["layout"], c.n_codebooks, c.codebook_size, where)
        self.prompt = PromptTemplate.from_dict(m["prompt"], where)
        self.length = LengthPolicy.from_dict(m["length"], where)
        self.codec = CodecSpec.from_manifest(m, where)
        depth = self.layout.kind == "depth" and self.layout.depth_positions > 0
        heads = tuple(f"head.{j}" for j in range(len(self.layout.heads)))
        for role in ("backbone", "codec_decode") + (("depth",) if depth else ()) + heads:
            if role not in m["graphs"]:
                raise BundleError(f"{where} has no {role!r} graph; {REBUILD_HINT}")
        self.embedding = Embedding.from_dict(m["graphs"]["backbone"].get("embedding"), c.n_codebooks,
                                             f"{where}: graph 'backbone'")
        self.depth_embedding = (DepthEmbedding.from_dict(m["graphs"]["depth"].get("embedding"),
                                                         self.layout.depth_positions, f"{where}: graph 'depth'")
                                if depth else None)

    @functools.cached_property
    def tokenizer(self):
        """The family's tokenizer: UTF-8 bytes, or the bundle's `tokenizer.json`."""
        spec = self.manifest.get("tokenizer", {})
        if spec.get("type") == "tokenizers":
            name = spec.get("file")
            if name not in self.manifest["files"]:
                raise BundleError(f"{self.path}: the tokenizer file {str(name)[:60]!r} is not among the hashed files; "
                                  f"{REBUILD_HINT}")
            return FileTokenizer(read_verified(self.path, name, self.manifest["files"][name], str(self.path)))
        return ByteTokenizer()

    @property
    def sampling_defaults(self) -> dict:
        """The family's default sampling parameters (temperature, top_k, top_p, repetition_penalty)."""
        return dict(self.manifest.get("sampling", {}))

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, trusted_keys=None) -> "Bundle":
        """Read and check a bundle.

        Args:
            path: the bundle directory (holding manifest.json).
            verify: hash every file against the manifest (default).
            trusted_keys: Ed25519 public keys (PEM bytes or files); the bundle must be signed by one
                (default: the file named by $CADENZA_TRUSTED_KEYS, if set; see `signing.py`).
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
        if (verify or trusted_keys) and manifest.get("content_sha256") != content_hash(manifest):
            raise BundleError(f"{mpath} was edited after export (content hash mismatch); {REBUILD_HINT}")
        signing.check(p, manifest.get("content_sha256", ""), signing.trusted_keys(trusted_keys))
        bundle = cls(p, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check the manifest's own hash and every file's SHA-256 (each opened inside the bundle only)."""
        if self.manifest.get("content_sha256") != content_hash(self.manifest):
            raise BundleError(f"{self.path / MANIFEST} was edited after export (content hash mismatch); {REBUILD_HINT}")
        for name, digest in self.manifest["files"].items():
            fd = open_inside(self.path, name, str(self.path))
            try:
                if sha256_fd(fd) != digest:
                    raise BundleError(f"{self.path}: {name} does not match its manifest hash (truncated or "
                                      f"replaced?); {REBUILD_HINT}")
            finally:
                os.close(fd)

    # --- accessors -------------------------------------------------------
    @property
    def hash(self) -> str:
        """Identifies the exact bundle (weights and graphs): the manifest's content hash."""
        return self.manifest["content_sha256"]

    @property
    def family(self) -> str | None:
        return self.manifest.get("family")

    def has(self, role: str) -> bool:
        return role in self.manifest["graphs"]

    def graph(self, role: str) -> dict:
        try:
            return self.manifest["graphs"][role]
        except KeyError:
            raise BundleError(f"{self.path} has no {role!r} graph; {REBUILD_HINT}") from None

    def graph_path(self, role: str) -> Path:
        return self.path / self.graph(role)["file"]

    def graph_files(self, role: str) -> list[Path]:
        """The graph file of `role` and its external-data files (weights kept beside the graph)."""
        entry = self.graph(role)
        return [self.path / entry["file"], *(self.path / d for d in entry.get("data", []))]

    @property
    def kv_itemsize(self) -> int:
        """Bytes per element of the backbone's KV cache (its graph's `kv.dtype`)."""
        return 2 if self.graph("backbone")["kv"].get("dtype") == "float16" else 4

    @functools.cached_property
    def weight_bytes(self) -> dict[str, int]:
        """role -> bytes on disk of its graph and external data (what one run of it reads at most)."""
        return {role: sum(f.stat().st_size for f in self.graph_files(role) if f.is_file())
                for role in self.manifest["graphs"]}
