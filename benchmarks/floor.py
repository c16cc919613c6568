"""The memory-bandwidth floor of a backbone step: weight bytes read per step / measured read bandwidth.

A decode step reads every backbone weight once, whatever the batch, so no engine can step
faster than `weight bytes / bandwidth`. The bandwidth is measured with the operation a step
is made of: a matrix-vector product (ONNX Runtime's `MatMul` of a [1, K] row by a [K, N]
fp32 matrix bound by pointer, `threads` intra-op threads, spinning off) over a matrix larger
than the last-level cache, so every byte comes from memory. A numpy `sum` is no measure of
it: it is compute-bound at ~5-20 GB/s a thread, well under what a GEMV reads.

`floor_section(bundle, threads)` gives the bench document's `floor` block: the bandwidth
(best and median of the runs: the floor uses the best, being a bound), the backbone's weight
bytes per step, and the floor in ms.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

GEMV_K = 4096
MIN_BYTES, MAX_BYTES = 256 << 20, 1 << 30


def last_level_cache() -> int:
    """Bytes of the largest CPU cache sysfs lists (0 if unknown)."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            s = f.read_text().strip()
            best = max(best, int(s[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[s[-1]] if s[-1] in "KMG"
                       else int(s))
        except (OSError, ValueError, KeyError):
            continue
    return best


def _gemv_session(K: int, N: int, threads: int):
    import onnxruntime as ort

    from cadenza.engine.backends.ort.graph import session_options

    # a hand-written ModelProto (no onnx package at run time): MatMul(x [1, K], w [K, N]) -> y
    model = _matmul_model(K, N)
    return ort.InferenceSession(model, session_options(threads, False), providers=["CPUExecutionProvider"])


def _matmul_model(K: int, N: int) -> bytes:
    """The serialized ONNX model of y = MatMul(x, w), written with the protobuf wire format."""
    def key(num, wt):
        return _varint(num << 3 | wt)

    def msg(num, body: bytes) -> bytes:
        return key(num, 2) + _varint(len(body)) + body

    def s(num, text: str) -> bytes:
        return msg(num, text.encode())

    def value_info(name: str, dims: list[int]) -> bytes:
        shape = b"".join(msg(1, key(1, 0) + _varint(d)) for d in dims)  # Dimension.dim_value
        tensor_type = key(1, 0) + _varint(1) + msg(2, shape)  # elem_type FLOAT, shape
        return s(1, name) + msg(2, msg(1, tensor_type))  # ValueInfo.name, .type.tensor_type
    node = s(1, "x") + s(1, "w") + s(2, "y") + s(4, "MatMul")
    graph = msg(1, node) + s(2, "gemv") + msg(11, value_info("x", [1, K])) + msg(11, value_info("w", [K, N])) \
        + msg(12, value_info("y", [1, N]))
    opset = msg(8, key(2, 0) + _varint(17))  # domain "" version 17
    return key(1, 0) + _varint(8) + opset + msg(7, graph)  # ir_version 8


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def gemv_bandwidth(threads: int, nbytes: int | None = None, runs: int = 12) -> dict:
    """Read bandwidth of a fp32 GEMV over a matrix of `nbytes` (default: 2x the last-level cache,
    within [256 MiB, 1 GiB]): {"best_gb_s", "median_gb_s", "matrix_bytes", "threads", "method"}."""
    if nbytes is None:
        nbytes = min(max(2 * last_level_cache(), MIN_BYTES), MAX_BYTES)
    K = GEMV_K
    N = max(1, nbytes // (4 * K))
    session = _gemv_session(K, N, threads)
    w = np.full((K, N), 0.5, np.float32)  # written, so every page is its own memory (np.zeros would share one)
    x, y = np.ones((1, K), np.float32), np.zeros((1, N), np.float32)
    b = session.io_binding()
    for name, a in (("x", x), ("w", w)):
        b.bind_input(name, "cpu", 0, np.float32, a.shape, a.ctypes.data)
    b.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
    times = []
    for i in range(runs + 2):
        t0 = time.perf_counter()
        session.run_with_iobinding(b)
        if i >= 2:  # two warm-up runs
            times.append(time.perf_counter() - t0)
    if not math.isclose(float(y[0, 0]), 0.5 * K, rel_tol=1e-3):
        raise RuntimeError(f"the GEMV computed {y[0, 0]}, expected {0.5 * K}")
    return {"best_gb_s": w.nbytes / min(times) / 1e9, "median_gb_s": w.nbytes / float(np.median(times)) / 1e9,
            "matrix_bytes": int(w.nbytes), "last_level_cache_bytes": last_level_cache(), "threads": threads,
            "method": f"ONNX Runtime MatMul [1,{K}] x [{K},{N}] fp32, bound by pointer, {threads} intra-op "
                      f"thread(s), spinning off; best and median of {runs} runs after 2 warm-up"}


def step_weight_bytes(bundle) -> int:
    """Weight bytes one backbone step reads: the backbone graph's files minus its embedding table (a step
    gathers a few rows of it), plus one cut head (`head.{j}`) where the layout has them."""
    g = bundle.graph("backbone")
    size = sum((bundle.path / f).stat().st_size for f in [g["file"], *g.get("data", [])])
    c, emb = bundle.constants, bundle.embedding
    itemsize = 2 if g.get("precision") == "fp16" else 4
    size -= (emb.null_row + 1) * c.backbone_dim * itemsize
    heads = [bundle.graph(f"head.{j}") for j in range(len(getattr(bundle.layout, "heads", ()) or ()))]
    if heads:
        size += sum(sum((bundle.path / f).stat().st_size for f in [h["file"], *h.get("data", [])]) for h in heads) \
            // len(heads)
    return int(size)


def floor_section(bundle, threads: int, bandwidth: dict | None = None) -> dict:
    """The `floor` block of the bench document (see the module docstring)."""
    bw = bandwidth or gemv_bandwidth(threads)
    wb = step_weight_bytes(bundle)
    return {"definition": "a backbone step's weight bytes / the best measured GEMV read bandwidth: no engine "
                          "steps faster (KV-cache reads come on top, and grow with the position)",
            "bandwidth": bw, "step_weight_bytes": wb, "step_floor_ms": wb / (bw["best_gb_s"] * 1e9) * 1e3,
            "step_floor_ms_at_median_bandwidth": wb / (bw["median_gb_s"] * 1e9) * 1e3}
