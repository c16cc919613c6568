"""The step floor: a GEMV's read bandwidth (a real ONNX Runtime MatMul over a written matrix) and the weight
bytes a backbone step reads; and the llama.cpp build flags (AMX always off)."""
from __future__ import annotations

import numpy as np
import pytest

from cadenza.benchmarks import floor
from cadenza.benchmarks.peer_setup import cmake_args


def test_the_gemv_model_is_valid_onnx():
    onnx = pytest.importorskip("onnx", reason="checking the model needs onnx: pip install -e .[export]")
    m = onnx.load_model_from_string(floor._matmul_model(8, 4))
    onnx.checker.check_model(m)
    assert [n.op_type for n in m.graph.node] == ["MatMul"]
    assert [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input] == [[1, 8], [8, 4]]


def test_gemv_bandwidth_measures_a_matrix_vector_product():
    bw = floor.gemv_bandwidth(threads=1, nbytes=8 << 20, runs=3)
    assert bw["matrix_bytes"] == 8 << 20 and bw["threads"] == 1
    assert 0 < bw["median_gb_s"] <= bw["best_gb_s"]
    assert "MatMul" in bw["method"]


def test_step_weight_bytes_leave_out_the_embedding_table(tiny_bundle):
    from cadenza.engine.contract.bundle import Bundle

    b = Bundle.load(tiny_bundle, verify=False)
    total = b.weight_bytes["backbone"]
    table = (b.embedding.null_row + 1) * b.constants.backbone_dim * 4
    assert floor.step_weight_bytes(b) == total - table
    s = floor.floor_section(b, 1, {"best_gb_s": 10.0, "median_gb_s": 5.0})
    assert s["step_floor_ms"] == pytest.approx((total - table) / 10e9 * 1e3)
    assert s["step_floor_ms_at_median_bandwidth"] == pytest.approx(2 * s["step_floor_ms"])


def test_llama_cpp_flags_name_this_cpus_extensions_and_never_amx():
    args = cmake_args(flags={"avx2", "fma", "avx512f", "avx512vbmi", "amx_tile", "amx_int8"}).split()
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX2=ON" in args and "-DGGML_AVX512_VBMI=ON" in args
    assert "-DGGML_AMX_TILE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args and "-DGGML_AVX512_BF16=ON" not in args
    assert cmake_args(native=True) == "-DGGML_NATIVE=ON"
    assert np.all([a.startswith("-D") for a in args])
