"""A graph's bytes and external weights, read once, checked, and handed to the runtime as they were checked.

`load_graph(bundle, role)` returns the graph file's bytes (hashed as read) and, for
every initializer stored outside the graph, a numpy view of the verified bytes of
its data file. The backend gives ONNX Runtime exactly these (the model from memory,
the external weights as overriding initializers), so ONNX Runtime opens no file of
the bundle itself: what was hashed is what runs. Every external-data location must
be one of the graph's `data` files in the manifest; a graph that points anywhere
else is refused before any file outside the bundle could be touched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import BundleError
from .files import read_verified
from .onnx_refs import external_tensors

# onnx.TensorProto.DataType -> numpy
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


@dataclass
class LoadedGraph:
    model: bytes
    initializers: dict[str, np.ndarray] = field(default_factory=dict)  # external weights, views of `_keep`
    _keep: list = field(default_factory=list, repr=False)  # the verified data files the views point into


def load_graph(bundle, role: str, verify: bool = True) -> LoadedGraph:
    """The verified bytes of `role`'s graph and of its external weights (BundleError on any mismatch)."""
    entry, files = bundle.graph(role), bundle.manifest["files"]
    where = f"{bundle.path}: graph {role!r}"
    model = read_verified(bundle.path, entry["file"], files[entry["file"]] if verify else None, where)
    refs = external_tensors(model, where)
    allowed = set(entry.get("data", []))
    out = LoadedGraph(model)
    data: dict[str, bytes] = {}
    for t in refs:
        if not t.top_level or t.location not in allowed:
            raise BundleError(f"{where}: initializer {t.name[:60]!r} points at {t.location[:60]!r}, which is not one "
                              "of this graph's data files in the manifest; rebuild the bundle")
        if t.location not in data:
            data[t.location] = read_verified(bundle.path, t.location, files[t.location] if verify else None, where)
            out._keep.append(data[t.location])
        out.initializers[t.name] = _view(data[t.location], t, where)
    return out


def _view(buf: bytes, t, where: str) -> np.ndarray:
    dtype = ONNX_DTYPES.get(t.data_type)
    if dtype is None:
        raise BundleError(f"{where}: initializer {t.name[:60]!r} has an unsupported data type {t.data_type}")
    count = math.prod(t.dims) if t.dims else 1
    size = count * np.dtype(dtype).itemsize
    if t.offset < 0 or (t.length is not None and t.length != size) or t.offset + size > len(buf):
        raise BundleError(f"{where}: initializer {t.name[:60]!r} ({size} bytes at {t.offset}) does not fit "
                          f"{t.location} ({len(buf)} bytes); rebuild the bundle")
    return np.frombuffer(buf, dtype=dtype, count=count, offset=t.offset).reshape(t.dims)
