"""Opening a file that a bundle names: inside the bundle, a regular file, never through a link.

`open_inside(root, name)` checks the name without touching the file system (no `..`,
not absolute), refuses a symbolic link at any step below the bundle directory, and
opens with `O_NOFOLLOW`, then checks the handle is a regular file. So a manifest
cannot make the engine open, hash or reveal anything outside its directory.
`read_verified` reads a file once and checks its SHA-256: the bytes returned are the
bytes that were hashed (there is no window between the check and the use).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from ..errors import BundleError
from .validate import relative_name

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_inside(root: Path, name: str, where: str) -> int:
    """A read-only file descriptor of `root/name` (BundleError: outside, a link, missing, not a file)."""
    rel = relative_name(name, where)
    cur = root
    for part in rel.parts[:-1]:
        cur = cur / part
        if cur.is_symlink() or not cur.is_dir():
            raise BundleError(f"{where}: {name!r} is not a plain file of the bundle (a link or a missing "
                              "directory on its path); rebuild the bundle")
    try:
        fd = os.open(root / rel, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        raise BundleError(f"{where}: the bundle is missing {name}; rebuild it with `cadenza export`") from None
    except OSError:  # ELOOP: a symbolic link, refused by O_NOFOLLOW
        raise BundleError(f"{where}: {name!r} is not a plain file of the bundle (a link?); rebuild the bundle") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{where}: {name!r} is not a regular file; rebuild the bundle")
    return fd


def sha256_fd(fd: int, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with os.fdopen(os.dup(fd), "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_verified(root: Path, name: str, digest: str | None, where: str) -> bytes:
    """The whole file, read once; BundleError if its SHA-256 is not `digest` (None: not checked)."""
    fd = open_inside(root, name, where)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{where}: {name} does not match its manifest hash (truncated or replaced?); "
                          "rebuild the bundle with `cadenza export`")
    return data
