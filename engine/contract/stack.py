"""The transformer stacks' graph contract: how the engine addresses a `backbone` or `depth` graph.

Both roles take rows of one embedding table (`ids`), summed over a position's slots,
and keep their K/V in per-layer caches in one of two modes (the manifest's `kv.mode`):

- `returned`: the graph returns each call's new entries; the engine writes them;
- `in_place`: the graph writes them itself into `present_*` outputs the engine binds
  to the very buffers of its `past_*` inputs.

`Embedding` (the backbone's `embedding` entry) says where the rows are: text token t
at `text_offset + t`, codebook k's code c at `code_offsets[k] + c` (depth layouts;
a flat layout feeds its vocabulary ids through the text rows), and the null row that
adds nothing (padding, empty slots). `DepthEmbedding`: per depth position the row of
code 0 of the code it consumes (None: none, the null row).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BundleError

MODES = ("returned", "in_place")
MAX_ROWS = 1 << 24


def _fail(where: str, what: str) -> BundleError:
    return BundleError(f"{where}: {what}; rebuild the bundle with `cadenza export`")


def _row(v, where: str, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_ROWS:
        raise _fail(where, f"embedding {name} {str(v)[:40]!r} is not a row index in [0, {MAX_ROWS}]")
    return v


@dataclass(frozen=True)
class Embedding:
    slots: int
    text_offset: int
    code_offsets: tuple[int, ...] | None
    null_row: int

    @classmethod
    def from_dict(cls, d, n_codebooks: int, where: str) -> "Embedding":
        if not isinstance(d, dict):
            raise _fail(where, "the backbone graph has no embedding entry")
        slots = d.get("slots")
        if not isinstance(slots, int) or isinstance(slots, bool) or not 1 <= slots <= 64:
            raise _fail(where, f"embedding slots {str(slots)[:40]!r} is not in [1, 64]")
        offsets = d.get("code_offsets")
        if offsets is not None:
            if not isinstance(offsets, list) or len(offsets) != n_codebooks or slots != n_codebooks:
                raise _fail(where, f"embedding code_offsets must list {n_codebooks} rows, one per slot")
            offsets = tuple(_row(o, where, "code offset") for o in offsets)
        return cls(slots, _row(d.get("text_offset"), where, "text_offset"), offsets,
                   _row(d.get("null_row"), where, "null_row"))


@dataclass(frozen=True)
class DepthEmbedding:
    offsets: tuple[int | None, ...]
    null_row: int

    @classmethod
    def from_dict(cls, d, positions: int, where: str) -> "DepthEmbedding":
        if not isinstance(d, dict) or not isinstance(d.get("offsets"), list) or len(d["offsets"]) != positions:
            raise _fail(where, f"the depth graph's embedding must list {positions} offsets, one per depth position")
        return cls(tuple(None if o is None else _row(o, where, "offset") for o in d["offsets"]),
                   _row(d.get("null_row"), where, "null_row"))


def kv_mode(kv: dict, where: str) -> str:
    mode = kv.get("mode")
    if mode not in MODES:
        raise _fail(where, f"kv mode {str(mode)[:40]!r} is not one of {MODES}")
    return mode
