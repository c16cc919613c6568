"""Checks of a manifest's values before anything is allocated from them.

A bundle is input: a manifest can name any path and any size. Every check here is
pure (no file is opened): paths must be plain relative names inside the bundle,
and every number the engine sizes a buffer by must lie within sane bounds. Each
failure is a `BundleError` naming the field.
"""
from __future__ import annotations

import math
import re
from pathlib import PurePosixPath

from ..errors import BundleError
from .stack import kv_mode

DTYPES = ("float32", "float16", "int64", "int32")
DIM_RE = re.compile(r"^[a-z_]{1,32}([*/][0-9]{1,7})?$")
MAX_DIM = 1 << 20  # any fixed tensor dim
MAX_STATE_ELEMENTS = 1 << 26  # one stream's codec state tensor (Mimi's K/V window: ~1M)
MAX_NAME = 128

# constant -> (min, max)
BOUNDS = {
    "sample_rate": (8_000, 192_000), "hop": (1, 1 << 16), "n_codebooks": (1, 64), "codebook_size": (2, 1 << 20),
    "speaker_dim": (0, 8192), "max_seq_len": (8, 1 << 17), "backbone_dim": (1, 1 << 15),
    "backbone_layers": (1, 256), "kv_heads": (1, 256), "head_dim": (1, 1024), "depth_layers": (0, 64),
    "depth_kv_heads": (0, 256), "depth_head_dim": (0, 1024),
}


def fail(where: str, what: str) -> BundleError:
    return BundleError(f"{where}: {what}; rebuild the bundle with `cadenza export` (or get it from its source again)")


def relative_name(name, where: str) -> PurePosixPath:
    """A file name a manifest may use: relative, no `..`, no empty or odd parts (nothing is opened)."""
    if not isinstance(name, str) or not name or len(name) > 512 or "\\" in name or "\x00" in name:
        raise fail(where, f"file name {str(name)[:80]!r} is not a plain relative path")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise fail(where, f"file name {name[:80]!r} leaves the bundle directory (absolute or with '..')")
    return p


def constants(c: dict, where: str) -> None:
    for key, (lo, hi) in BOUNDS.items():
        v = c[key]
        if not lo <= v <= hi:
            raise fail(where, f"constant {key!r} = {v} is outside [{lo}, {hi}]")
    rate = c["sample_rate"] / c["hop"]
    if not math.isclose(c["frame_rate"], rate, rel_tol=1e-6):
        raise fail(where, f"constant 'frame_rate' = {c['frame_rate']} does not equal sample_rate / hop = {rate}")


def graph_entry(role: str, entry, consts: dict, files: dict, where: str) -> None:
    """A graph's entry: its files hashed in the manifest, tensors well formed, KV and state sane."""
    w = f"{where}: graph {role!r}"
    if not isinstance(entry, dict):
        raise fail(w, "entry is not an object")
    for name in [entry.get("file"), *entry.get("data", [])]:
        relative_name(name, w)
        if name not in files:
            raise fail(w, f"file {name!r} is not among the manifest's hashed files")
    for kind in ("inputs", "outputs"):
        tensors = entry.get(kind)
        if not isinstance(tensors, list) or not tensors or len(tensors) > 1024:
            raise fail(w, f"{kind} must be a non-empty list")
        for t in tensors:
            _tensor(t, w)
    kv = entry.get("kv")
    if kv is not None:
        _kv(role, kv, consts, w)
    for st in entry.get("state", []):
        _state(st, w)


def _tensor(t, w: str) -> None:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not 0 < len(t["name"]) <= MAX_NAME:
        raise fail(w, f"tensor {str(t)[:80]} has no valid name")
    if t.get("dtype") not in DTYPES:
        raise fail(w, f"tensor {t['name']!r} has dtype {t.get('dtype')!r}, not one of {DTYPES}")
    shape = t.get("shape")
    if not isinstance(shape, list) or len(shape) > 8:
        raise fail(w, f"tensor {t['name']!r} has no valid shape")
    for d in shape:
        ok = (isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM) or (
            isinstance(d, str) and DIM_RE.match(d))
        if not ok:
            raise fail(w, f"tensor {t['name']!r} has dim {str(d)[:40]!r} (ints 1..{MAX_DIM} or symbolic names)")


def _kv(role: str, kv, consts: dict, w: str) -> None:
    want = consts["depth_layers"] if role == "depth" else consts["backbone_layers"]
    if not isinstance(kv, dict) or kv.get("layers") != want:
        raise fail(w, f"kv layers {kv.get('layers') if isinstance(kv, dict) else kv!r} != the model's {want}")
    kv_mode(kv, w)
    if kv.get("dtype", "float32") not in ("float32", "float16"):
        raise fail(w, f"kv dtype {str(kv.get('dtype'))[:20]!r} is not float32 or float16")
    for key in ("past_key", "past_value", "out_key", "out_value"):
        name = kv.get(key)
        if not isinstance(name, str) or name.count("%d") != 1 or "%" in name.replace("%d", "") or len(name) > 64:
            raise fail(w, f"kv {key!r} must be a name with one %d, got {str(name)[:40]!r}")


def _state(st, w: str) -> None:
    if not isinstance(st, dict) or not all(isinstance(st.get(k), str) for k in ("input", "output")):
        raise fail(w, "a state entry needs input and output names")
    shape = st.get("shape")
    if not isinstance(shape, list) or len(shape) > 6 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM for d in shape):
        raise fail(w, f"state {st['input']!r} shape {str(shape)[:60]} is not a list of positive ints")
    if math.prod(shape) > MAX_STATE_ELEMENTS:
        raise fail(w, f"state {st['input']!r} of {math.prod(shape)} elements per stream exceeds {MAX_STATE_ELEMENTS}")
    if st.get("dtype", "float32") not in DTYPES:
        raise fail(w, f"state {st['input']!r} has dtype {st.get('dtype')!r}")
