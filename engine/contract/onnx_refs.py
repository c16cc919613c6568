"""Which external files an ONNX graph points at, read from its protobuf bytes without the `onnx` package.

An initializer whose weights live outside the graph file carries `external_data`
entries (`location`, `offset`, `length`). The bundle checks every location before
ONNX Runtime sees the graph (`graph_io.py`), so this reader walks the few message
types that can hold a tensor: the model's graph, its nodes' attributes (tensors and
subgraphs, recursively), sparse initializers and functions. It copies no weight
bytes: only tensor names, shapes, dtypes and the external-data entries come out.

Protobuf wire format: each field is a varint key `(number << 3) | wire_type`; wire
type 0 is a varint, 1 eight bytes, 2 a length-prefixed byte string (a nested
message, a string or packed numbers), 5 four bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BundleError

# field numbers (onnx.proto3)
MODEL_GRAPH, MODEL_FUNCTIONS = 7, 25
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER = 1, 5, 15
NODE_ATTRIBUTE = 5
ATTR_T, ATTR_G, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSE, ATTR_SPARSES = 5, 6, 10, 11, 22, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
FUNCTION_NODE = 7
TENSOR_DIMS, TENSOR_TYPE, TENSOR_NAME, TENSOR_EXTERNAL, TENSOR_LOCATION = 1, 2, 8, 13, 14
MAX_DEPTH = 16


@dataclass
class ExternalTensor:
    """One initializer stored outside the graph file."""

    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0  # onnx.TensorProto.DataType
    entries: dict[str, str] = field(default_factory=dict)  # location, offset, length, checksum
    top_level: bool = True  # a graph initializer (not inside a subgraph or an attribute)

    @property
    def location(self) -> str:
        return self.entries.get("location", "")

    @property
    def offset(self) -> int:
        return int(self.entries.get("offset", "0"))

    @property
    def length(self) -> int | None:
        return int(self.entries["length"]) if "length" in self.entries else None


def _varint(buf, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf):
    """(field number, wire type, value) for each field of one message: value is an int or a memoryview."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            size, i = _varint(buf, i)
            if i + size > n:
                raise ValueError("truncated field")
            v, i = buf[i:i + size], i + size
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, v


def _tensor(buf, top_level: bool) -> ExternalTensor | None:
    t, external = ExternalTensor(top_level=top_level), False
    for num, wt, v in _fields(buf):
        if num == TENSOR_DIMS:
            t.dims += [_varint(v, j)[0] for j in _positions(v)] if wt == 2 else [v]
        elif num == TENSOR_TYPE:
            t.data_type = v
        elif num == TENSOR_NAME:
            t.name = bytes(v).decode("utf-8", "replace")
        elif num == TENSOR_EXTERNAL and wt == 2:  # StringStringEntryProto: key = 1, value = 2
            entry = {k: bytes(x).decode("utf-8", "replace") for k, xwt, x in _fields(v) if xwt == 2}
            t.entries[entry.get(1, "")] = entry.get(2, "")
        elif num == TENSOR_LOCATION:
            external = v == 1
    return t if external or t.entries else None


def _positions(packed) -> list[int]:
    """Start offsets of the varints of a packed repeated field."""
    out, i = [], 0
    while i < len(packed):
        out.append(i)
        _, i = _varint(packed, i)
    return out


def _graph(buf, out: list, depth: int, top: bool) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("graphs nested too deep")
    for num, wt, v in _fields(buf):
        if wt != 2:
            continue
        if num == GRAPH_INITIALIZER:
            _add(_tensor(v, top), out)
        elif num == GRAPH_SPARSE_INITIALIZER:
            _sparse(v, out)
        elif num == GRAPH_NODE:
            _node(v, out, depth)


def _node(buf, out: list, depth: int) -> None:
    for num, wt, v in _fields(buf):
        if num != NODE_ATTRIBUTE or wt != 2:
            continue
        for anum, awt, av in _fields(v):
            if awt != 2:
                continue
            if anum in (ATTR_T, ATTR_TENSORS):
                _add(_tensor(av, False), out)
            elif anum in (ATTR_G, ATTR_GRAPHS):
                _graph(av, out, depth + 1, False)
            elif anum in (ATTR_SPARSE, ATTR_SPARSES):
                _sparse(av, out)


def _sparse(buf, out: list) -> None:
    for num, wt, v in _fields(buf):
        if wt == 2 and num in (SPARSE_VALUES, SPARSE_INDICES):
            _add(_tensor(v, False), out)


def _add(t: ExternalTensor | None, out: list) -> None:
    if t is not None:
        out.append(t)


def external_tensors(model_bytes, where: str = "the graph") -> list[ExternalTensor]:
    """Every tensor of an ONNX model that is stored outside it (BundleError if the bytes are not a model)."""
    out: list[ExternalTensor] = []
    try:
        for num, wt, v in _fields(memoryview(model_bytes)):
            if wt != 2:
                continue
            if num == MODEL_GRAPH:
                _graph(v, out, 0, True)
            elif num == MODEL_FUNCTIONS:
                for fnum, fwt, fv in _fields(v):
                    if fnum == FUNCTION_NODE and fwt == 2:
                        _node(fv, out, 1)
    except (ValueError, IndexError) as e:
        raise BundleError(f"{where} is not a valid ONNX model ({e}); rebuild the bundle") from None
    return out
