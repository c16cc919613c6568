"""The GPU benchmark's CPU dry run: every part's code runs (the graph path simulated) and writes its JSON."""
from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the GPU benchmark runs the PyTorch model")


def test_gpu_bench_dry_run(tmp_path):
    """`gpu_bench.py --dry-run --device cpu` runs every part's code (graph path simulated) and writes its JSON."""
    import json

    from cadenza.benchmarks import gpu_bench

    rc = gpu_bench.main(["--dry-run", "--size", "tiny", "--device", "cpu", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "gpu_bench.json").read_text())
    rows = doc["rows"]
    assert rc == 0, [r for r in rows if "error" in r]
    assert len((tmp_path / "gpu_bench.jsonl").read_text().splitlines()) == len(rows)
    frames = [r for r in rows if r["part"] == "frame"]
    assert {r["impl"] for r in frames} == {"graph", "eager"}
    assert {r["batch"] for r in frames} == {1, 2, 3}
    for r in frames:
        assert r["p50_ms"] > 0 and r["weight_gb"] > 0 and 0 < r["floor_fraction"] and len(r["samples_ms"]) == r["iters"]
    assert {r["background_streams"] for r in rows if r["part"] == "ttfa"} == {0, 2}
    assert {r["streams"] for r in rows if r["part"] == "codec"} == {1, 2}
    assert doc["meta"]["device"].startswith("cpu")
