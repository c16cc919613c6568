"""The backend interface every runtime backend implements (ONNX Runtime now; torch, TensorRT later).

A backend opens one `Graph` per role of a bundle. A graph owns named,
preallocated output buffers; `run(feeds)` binds the caller's input arrays
(zero-copy where the backend can) and returns views of its output buffers.

Ownership: the arrays `run` returns belong to the graph and are overwritten by
its next `run`; copy what must outlive that. Buffers are flat arrays sized for
the largest shape announced at open time (`max_dims`) and reshaped per call, so
a batch of any size up to the maximum is a contiguous view and the decode loop
allocates nothing. A call beyond the announced maxima grows the buffer once.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from .bundle import Bundle
from .errors import BackendUnavailable

DTYPES = {"float32": np.float32, "int64": np.int64, "float16": np.float16, "int32": np.int32}


class Graph(ABC):
    """One graph role, ready to run."""

    def __init__(self, role: str, entry: dict, max_dims: dict[str, int]):
        self.role = role
        self.inputs = entry["inputs"]
        self.outputs = entry["outputs"]
        self.input_names = [t["name"] for t in self.inputs]
        self.output_names = [t["name"] for t in self.outputs]
        self.kv = entry.get("kv")  # names of the per-layer cache tensors, or None
        self.kv_layers = self.kv["layers"] if self.kv else 0
        self.state = entry.get("state", [])  # streaming state: [{"input", "output", "shape"}]
        self._buffers: dict[str, np.ndarray] = {}
        sizes = {t["name"]: self._numel(t["shape"], max_dims) for t in self.outputs}
        for t in self.outputs:
            self._buffers[t["name"]] = np.zeros(sizes[t["name"]], DTYPES[t["dtype"]])

    @staticmethod
    def dim_value(d, dims: dict[str, int], default: int | None = None) -> int:
        """An int dim, a symbolic name, or a derived "name*N" / "name/N" (whole frames)."""
        if isinstance(d, int):
            return d
        for op in ("*", "/"):
            if op in d:
                name, n = d.split(op)
                v = dims.get(name, default)
                return v * int(n) if op == "*" else v // int(n)
        return dims[d] if default is None else dims.get(d, default)

    @classmethod
    def _numel(cls, shape, dims: dict[str, int]) -> int:
        return math.prod(cls.dim_value(d, dims, 1) for d in shape)

    def resolve_dims(self, feeds: dict[str, np.ndarray]) -> dict[str, int]:
        """Symbolic dim values from the input arrays; checks fixed dims, naming the argument."""
        dims: dict[str, int] = {}
        for t in self.inputs:
            arr = feeds.get(t["name"])
            if arr is None:
                raise KeyError(f"{self.role}: missing input {t['name']!r}")
            if arr.ndim != len(t["shape"]):
                raise ValueError(f"{self.role}: input {t['name']!r} has rank {arr.ndim}, expected {t['shape']}")
            for want, got in zip(t["shape"], arr.shape):
                if isinstance(want, int) and want != got:
                    raise ValueError(f"{self.role}: input {t['name']!r} has shape {arr.shape}, expected {t['shape']}")
                if isinstance(want, str) and dims.setdefault(want, got) != got:
                    raise ValueError(f"{self.role}: input {t['name']!r} dim {want}={got} disagrees with {dims[want]}")
        return dims

    def output_views(self, dims: dict[str, int]) -> dict[str, np.ndarray]:
        out = {}
        for t in self.outputs:
            shape = tuple(self.dim_value(d, dims) for d in t["shape"])
            n = math.prod(shape)
            buf = self._buffers[t["name"]]
            if n > buf.size:  # beyond the announced maximum: grow once (never in the decode loop)
                buf = self._buffers[t["name"]] = np.zeros(n, buf.dtype)
            out[t["name"]] = buf[:n].reshape(shape)
        return out

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with `feeds` (name -> C-contiguous array); returns views of the output buffers."""

    def close(self) -> None:
        pass


class Backend(ABC):
    name = "abstract"

    @abstractmethod
    def open(self, bundle: Bundle, role: str, max_dims: dict[str, int], threads: int | None = None) -> Graph:
        """Open one graph role of `bundle`."""


def get_backend(name: str) -> Backend:
    """A backend by name: `ort` (ONNX Runtime, CPU; the default)."""
    if name in ("ort", "onnxruntime"):
        from .ort_backend import OrtBackend

        return OrtBackend()
    if name == "ort-cuda":
        from .ort_backend import OrtBackend

        return OrtBackend(provider="CUDAExecutionProvider")
    raise BackendUnavailable(f"unknown backend {name!r}; available: ort (CPU), ort-cuda (needs onnxruntime-gpu), torch (CPU), torch-cuda (needs a GPU)")
