"""Helpers of the hostile-input tests: record every file the process opens, rehash an edited bundle."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

_OPENED: list[str] | None = None


def _hook(event: str, args) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        _OPENED.append((os.fsdecode(args[0]), flags))


sys.addaudithook(_hook)  # audit hooks stay for the process's life; recording is switched on by `opened_files`


@contextmanager
def opened_files():
    """Collect the paths opened (through Python's open / os.open) inside the block."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def outside(opened: list, root: Path) -> list[str]:
    """The opened paths that lie outside `root`, ignoring Python's own module and library files. A final
    symbolic link counts where it leads unless it was opened with O_NOFOLLOW (which refuses a link)."""
    root = Path(root).resolve()
    out = []
    for p, flags in opened:
        nofollow = flags & getattr(os, "O_NOFOLLOW", 0)
        rp = Path(p).parent.resolve() / Path(p).name if nofollow else Path(p).resolve()
        if rp.suffix in (".py", ".pyc", ".so") or "site-packages" in rp.parts or "/proc/" in p:
            continue
        if not rp.is_relative_to(root):
            out.append(p)
    return out


def rehash(bundle: Path) -> None:
    """Recompute every file hash and the manifest's own hash, as an attacker with write access would."""
    from cadenza.engine.contract.bundle import content_hash

    m = json.loads((bundle / "manifest.json").read_text())
    for name in list(m["files"]):
        f = bundle / name
        if f.is_file() and not f.is_symlink():
            m["files"][name] = hashlib.sha256(f.read_bytes()).hexdigest()
    m["content_sha256"] = content_hash(m)
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))


def edit_manifest(bundle: Path, mutate) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    mutate(m)
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))
    rehash(bundle)
