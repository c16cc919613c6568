"""`python -m cadenza.benchmarks.profile`: ONNX Runtime's trace of the engine's decode frames, by operator."""
from __future__ import annotations


def test_profile_reports_the_fused_operators(tiny_bundle, capsys):
    from cadenza.benchmarks.profile import main, profile

    res = profile(str(tiny_bundle), batch=2, steps=3, threads=1)
    assert set(res) == {"backbone", "depth"}
    assert "GroupQueryAttention" in res["backbone"] and "MatMul" in res["backbone"]
    assert all(us > 0 for us in res["backbone"].values())
    assert main(["--bundle", str(tiny_bundle), "--steps", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| GroupQueryAttention |" in out and "ms of kernels per frame" in out and "inside ONNX Runtime" in out


def test_split_puts_the_runs_inside_the_frame(tiny_bundle):
    from cadenza.benchmarks.profile import split

    sp = split(str(tiny_bundle), batch=2, steps=4, threads=1)
    assert 0 < sp["ort_ms"] < sp["frame_ms"]
    assert abs(sp["ort_ms"] + sp["outside_ms"] - sp["frame_ms"]) < 1e-6
