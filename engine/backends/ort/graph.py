"""One bundle graph on ONNX Runtime: preallocated outputs, inputs bound by pointer.

`OrtGraph.run(feeds)` binds the caller's input arrays by pointer (IO binding,
zero-copy) and has ONNX Runtime write straight into the graph's own output
buffers. A call whose inputs and outputs have the same pointers and shapes as
the previous call reuses the binding as it stands (`binds` counts the times it
had to bind), so a decode step at a steady batch binds nothing.

Ownership: the arrays `run` returns belong to the graph and are overwritten by
its next `run`; copy what must outlive that. A caller may instead hand `run`
arrays to write some outputs into (`into`): a fused transformer's `present`
caches are bound to the very buffers of its `past` inputs, so it writes its new
K/V in place. Buffers are flat arrays sized for
the largest shape announced at open time (`max_dims`) and reshaped per call, so
a batch of any size up to the maximum is a contiguous view and the decode loop
allocates nothing. A call beyond the announced maxima grows the buffer once.
"""
from __future__ import annotations

import math
import os

import numpy as np
import onnxruntime as ort

from ...contract.bundle import Bundle
from ...contract.graph_io import load_graph
from ...errors import BundleError

DTYPES = {"float32": np.float32, "int64": np.int64, "float16": np.float16, "int32": np.int32}


def session_options(threads: int | None, spinning: bool = False) -> ort.SessionOptions:
    """Deliberate threading: `threads` intra-op threads (default: all cores), one inter-op thread.

    Spinning is off by default: the codec decoder runs on a second thread beside
    generation, and spinning pools would steal its core between kernels.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    return so


def open_session(bundle: Bundle, role: str, so: ort.SessionOptions) -> ort.InferenceSession:
    """An ONNX Runtime session over the verified bytes of `role` (`contract/graph_io.py`): the model from
    memory and its external weights as overriding initializers, so ONNX Runtime opens no file itself."""
    g = load_graph(bundle, role)
    if g.initializers:
        so.add_external_initializers(list(g.initializers),
                                     [ort.OrtValue.ortvalue_from_numpy(a) for a in g.initializers.values()])
    try:
        session = ort.InferenceSession(g.model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's errors (InvalidProtobuf, Fail, ...) share no base
        raise BundleError(f"{bundle.path}: ONNX Runtime cannot load the {role!r} graph "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); rebuild the bundle") from None
    session._cadenza_keep = g._keep  # the external weights' memory lives as long as the session (not the model bytes)
    return session


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


class _Bound:
    """What the last call bound: its arrays (held, so `is` stays meaningful), their data pointers and
    shapes, and the output views it returned. `holds` answers whether a new call binds the same
    memory with the same shapes and dtypes: by identity for the same array objects (a cache view,
    an output view), by pointer for new views of the same buffer (a slice taken per call)."""

    __slots__ = ("names", "arrays", "pointers", "outs", "into_names")

    def __init__(self, names: list[str], feeds: dict, into: dict | None, outs: dict):
        self.names = names
        self.into_names = tuple(into) if into else ()
        self.arrays = [feeds[n] for n in names] + ([into[n] for n in self.into_names] if into else [])
        self.pointers = tuple((a.ctypes.data, a.shape, a.dtype) for a in self.arrays) + \
            tuple((a.ctypes.data, a.shape) for a in outs.values())
        self.outs = outs

    def holds(self, feeds: dict, into: dict | None) -> bool:
        if (tuple(into) if into else ()) != self.into_names:
            return False
        new = [feeds.get(n) for n in self.names] + ([into[n] for n in self.into_names] if into else [])
        for a, b, (ptr, shape, dtype) in zip(new, self.arrays, self.pointers):
            if a is b:
                if a.shape != shape:
                    return False
            elif a is None or a.shape != shape or a.dtype != dtype or not a.flags.c_contiguous \
                    or a.ctypes.data != ptr:
                return False
        return True


class OrtGraph:
    """One graph role of a bundle, ready to run (names and shapes from its manifest entry)."""

    def __init__(self, bundle: Bundle, role: str, max_dims: dict[str, int], threads: int | None = None,
                 spinning: bool = False, caller_outputs: frozenset[str] = frozenset()):
        """`caller_outputs`: outputs the caller always binds itself (`run(into=...)`): no buffer here."""
        entry = bundle.graph(role)
        self.role = role
        self.inputs, self.outputs = entry["inputs"], entry["outputs"]
        self.input_names = [t["name"] for t in self.inputs]
        self.output_names = [t["name"] for t in self.outputs]
        self.kv = entry.get("kv")  # names of the per-layer cache tensors, or None
        self.kv_layers = self.kv["layers"] if self.kv else 0
        self.state = entry.get("state", [])  # streaming state: [{"input", "output", "shape"}]
        self._buffers = {t["name"]: np.zeros(math.prod(dim_value(d, max_dims, 1) for d in t["shape"]),
                                             DTYPES[t["dtype"]]) for t in self.outputs if t["name"] not in caller_outputs}
        self.session = open_session(bundle, role, session_options(threads, spinning))
        self.binding = self.session.io_binding()
        self._bound: _Bound | None = None
        self.binds = 0  # how many calls had to (re)bind

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
            if t["name"] not in self._buffers:
                continue
            shape = tuple(dim_value(d, dims) for d in t["shape"])
            n = math.prod(shape)
            buf = self._buffers[t["name"]]
            if n > buf.size:  # beyond the announced maximum: grow once (never in the decode loop)
                buf = self._buffers[t["name"]] = np.zeros(n, buf.dtype)
            out[t["name"]] = buf[:n].reshape(shape)
        return out

    def run(self, feeds: dict[str, np.ndarray], into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run with `feeds` (name -> C-contiguous array); returns the outputs: views of the graph's
        buffers, or the caller's arrays named in `into` (written in place).

        While the arrays keep their memory and shapes (a decode loop over the same batch), the binding
        and the output views of the last call are reused: nothing is resolved or bound again."""
        last = self._bound
        if last is not None and last.holds(feeds, into):
            outs = dict(last.outs)
        else:
            outs = self.output_views(self.resolve_dims(feeds))
            if into:
                outs.update(into)
            if len(outs) != len(self.outputs):
                raise ValueError(f"{self.role}: outputs {sorted(set(self.output_names) - set(outs))} need arrays (into=)")
            key = _Bound(self.input_names, feeds, into, outs)
            if last is None or key.pointers != last.pointers:
                self._bind(feeds, outs)
            self._bound = key
        self.session.run_with_iobinding(self.binding)
        return outs

    def _bind(self, feeds, outs) -> None:
        b = self.binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        for t in self.inputs:
            a = feeds[t["name"]]
            want = DTYPES[t["dtype"]]
            if a.dtype != want or not a.flags.c_contiguous:
                raise ValueError(f"{self.role}: input {t['name']!r} must be C-contiguous {np.dtype(want)}, "
                                 f"got {a.dtype}{'' if a.flags.c_contiguous else ' (non-contiguous)'}")
            b.bind_input(t["name"], "cpu", 0, want, a.shape, a.ctypes.data)
        for name, a in outs.items():
            if not a.flags.c_contiguous:
                raise ValueError(f"{self.role}: output {name!r} must be C-contiguous")
            b.bind_output(name, "cpu", 0, a.dtype, a.shape, a.ctypes.data)
        self.binds += 1

    def close(self) -> None:
        self._bound = None
