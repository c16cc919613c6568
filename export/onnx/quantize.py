"""Weight-only int8 for the portable transformer graphs, in standard ONNX operators.

A decode step reads every weight once, so on the CPU its floor is weight bytes /
memory bandwidth; int8 weights read a quarter of fp32's. ONNX Runtime's dynamic
quantisation rewrites each MatMul whose right-hand side is a constant weight
(per-tensor scale, activations quantised on the fly, `MatMulInteger`, a standard
operator); attention products between activations stay fp32. The fused graphs
quantise block-wise instead (`fused.py`, `MatMulNBits`).

Accuracy: logits keep a cosine similarity above 0.999 with fp32 on `tiny`
(tests/export/onnx/test_quantize.py), but greedy codes can diverge from the fp32
reference after a near tie, so parity tests use fp32 bundles.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul / Gemm nodes whose second input is a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]


def quantize_graph(path: Path) -> None:
    """Rewrite the ONNX graph at `path` in place with int8 weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = weight_matmuls(onnx.load(str(path), load_external_data=False))
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        quantize_dynamic(str(path), tmp, weight_type=QuantType.QInt8, nodes_to_quantize=nodes, per_channel=False)
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
