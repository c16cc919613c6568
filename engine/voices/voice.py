"""A cloned voice: the `Voice` record and its file format (the store: store.py; encoding: library.py).

A voice file is one safetensors file: tensors `embedding` (float32 [E]) and,
optionally, `prompt_codes` (int64 [K, F]: the sample's codec frames, for a
KV prefix); the rest is JSON under the header's metadata key `cadenza.voice`,
including a SHA-256 of the tensor bytes, so a partial or corrupt file is
refused on load. Files are written atomically (temp file in the same
directory, fsync, rename): a reader sees the old voice or the new one, never
half of one.

Example:
    >>> with Engine.load("bundles/tiny") as engine:
    ...     engine.voices.add("me.wav", "me")
    ...     pcm = engine.synthesize("Hello.", voice="me").pcm
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import VoiceError

FORMAT, FORMAT_VERSION, META_KEY = "cadenza-voice", 1, "cadenza.voice"
SUFFIX = ".safetensors"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PROMPT_SECONDS = 10.0
MAX_FILE_BYTES = 8 << 20  # a voice file: an embedding and at most ~10 s of prompt frames
MAX_HEADER_BYTES = 64 << 10
MAX_EMBEDDING, MAX_CODEBOOKS, MAX_PROMPT_FRAMES, MAX_TEXT = 8192, 64, 4096, 2000
ADD_HINT = "re-add it with `cadenza voice add SAMPLE.wav --name NAME --bundle DIR --replace`"


def check_name(name) -> str:
    """A valid voice name (letters, digits, `_ . -`; 1-64 chars; no leading dot, no path), else VoiceError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name.endswith(SUFFIX):
        raise VoiceError(f"invalid voice name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a "
                         f"letter or digit (no path separators, no leading dot, no {SUFFIX!r} ending)")
    return name


@dataclass
class Voice:
    """A cloned voice: a speaker embedding, optional prompt codes and where they came from."""

    name: str
    embedding: np.ndarray  # float32 [E]
    prompt_codes: np.ndarray | None = None  # int64 [K, F]
    transcript: str | None = None  # what the prompt audio says
    meta: dict = field(default_factory=dict)  # source_sha256, duration_s, source_sample_rate, family, bundle_hash, ...

    def __post_init__(self):
        check_name(self.name)
        self.embedding = np.ascontiguousarray(self.embedding, np.float32).reshape(-1)
        if not np.isfinite(self.embedding).all():
            raise VoiceError(f"voice {self.name!r}: the embedding must be finite")
        if self.embedding.size == 0 and self.prompt_codes is None:
            raise VoiceError(f"voice {self.name!r} has neither a speaker embedding nor prompt codes")
        if self.embedding.size > MAX_EMBEDDING:
            raise VoiceError(f"voice {self.name!r}: an embedding of {self.embedding.size} floats is too large")
        if self.prompt_codes is not None:
            self.prompt_codes = np.ascontiguousarray(self.prompt_codes, np.int64)
            c = self.prompt_codes
            if c.ndim != 2 or not (1 <= c.shape[0] <= MAX_CODEBOOKS and 1 <= c.shape[1] <= MAX_PROMPT_FRAMES):
                raise VoiceError(f"voice {self.name!r}: prompt_codes must be [K, F] with K <= {MAX_CODEBOOKS} and "
                                 f"F <= {MAX_PROMPT_FRAMES}, got {c.shape}")
            if c.min() < 0:
                raise VoiceError(f"voice {self.name!r}: prompt_codes hold negative codes; {ADD_HINT}")
        if self.transcript is not None and (not isinstance(self.transcript, str) or len(self.transcript) > MAX_TEXT):
            raise VoiceError(f"voice {self.name!r}: the transcript must be text of at most {MAX_TEXT} characters")
        if not isinstance(self.meta, dict) or len(json.dumps(self.meta, default=str)) > MAX_HEADER_BYTES // 2:
            raise VoiceError(f"voice {self.name!r}: its metadata is not a small JSON object")

    @property
    def bundle_hash(self) -> str | None:
        return self.meta.get("bundle_hash")

    @property
    def duration(self) -> float | None:
        return self.meta.get("duration_s")

    def tensors(self) -> dict[str, np.ndarray]:
        t = {"embedding": self.embedding}
        if self.prompt_codes is not None:
            t["prompt_codes"] = self.prompt_codes
        return t

    def save(self, path: str | Path, *, replace: bool = True) -> Path:
        """Write atomically: temp file in the same directory, fsync, rename (then fsync the directory).

        With replace=False an existing file is kept and FileExistsError raised."""
        from safetensors.numpy import save

        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                  "transcript": self.transcript, "meta": self.meta, "tensors_sha256": _digest(self.tensors())}
        data = save(self.tensors(), metadata={META_KEY: json.dumps(header, sort_keys=True)})
        return atomic_write(Path(path), data, replace=replace)

    @classmethod
    def load(cls, path: str | Path, *, follow_links: bool = True, expect_name: str | None = None) -> "Voice":
        """Read and check a voice file; VoiceError if it is missing, not a regular file, over
        `MAX_FILE_BYTES`, partial, corrupt or not a voice (or, with `expect_name`, a voice of another name)."""
        p = Path(path)
        data = read_capped(p, MAX_FILE_BYTES, follow_links, "voice file")
        header, tensors = _parse(data, p)
        if _digest(tensors) != header.get("tensors_sha256"):
            raise VoiceError(f"{p} is corrupt (its tensors do not match their checksum); {ADD_HINT}")
        if expect_name is not None and header.get("name") != expect_name:
            raise VoiceError(f"{p} holds a voice named {str(header.get('name'))[:64]!r}, not {expect_name!r}; "
                             f"remove it or {ADD_HINT}")
        try:
            return cls(header["name"], tensors["embedding"], tensors.get("prompt_codes"), header.get("transcript"),
                       dict(header.get("meta") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise VoiceError(f"{p} is not a complete voice file ({type(e).__name__}); {ADD_HINT}") from None


def read_capped(p: Path, cap: int, follow_links: bool, what: str) -> bytes:
    """A regular file's bytes, at most `cap` (VoiceError otherwise: missing, a device, a link, too large)."""
    flags = os.O_RDONLY | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise VoiceError(f"no {what} {p}") from None
    except OSError as e:
        raise VoiceError(f"{what} {p} cannot be opened ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VoiceError(f"{what} {p} is not a regular file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise VoiceError(f"{what} {p} is over {cap >> 20} MiB; a voice file holds an embedding and ~10 s of frames")
    return data


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _parse(data: bytes, p: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load

    bad = f"{p} is not a valid voice file (truncated, partial or not safetensors); {ADD_HINT}"
    if len(data) < 8 or int.from_bytes(data[:8], "little") > min(len(data) - 8, MAX_HEADER_BYTES):
        raise VoiceError(bad)
    try:
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
        header = json.loads(meta[META_KEY])
        tensors = load(data)
    except Exception as e:  # JSON, missing key, or safetensors' own SafetensorError on a bad buffer
        raise VoiceError(f"{bad} ({type(e).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise VoiceError(bad)
    if header.get("format_version") != FORMAT_VERSION:
        raise VoiceError(f"{p} has voice format {header.get('format_version')!r}; this Cadenza reads "
                         f"{FORMAT_VERSION}; {ADD_HINT}")
    return header, tensors


def atomic_write(path: Path, data: bytes, *, replace: bool = True) -> Path:
    """Write `data` to `path` atomically. With replace=False an existing file is kept (FileExistsError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return path


def _link_new(tmp: str, path: Path) -> None:
    """Atomic create-if-absent (a hard link fails if `path` exists), so a concurrent add is never clobbered."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a small race window)
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["Voice", "check_name", "atomic_write", "read_capped", "ADD_HINT", "SUFFIX", "MAX_PROMPT_SECONDS"]
