"""A real (small, quick) bench of the tiny bundle: the JSON document, its tables and
plot, and the packaged CI gate passing on it and failing on a doctored copy."""
from __future__ import annotations

import copy
import json

import pytest

from cadenza.benchmarks import gate
from cadenza.benchmarks.bench import BenchConfig, run_bench, write_json
from cadenza.benchmarks.report import markdown, plot

pytest.importorskip("torch", reason="the torch-eager baseline needs torch")
FRAMES = 16


@pytest.fixture(scope="module")
def bench_doc(tiny_bundle) -> dict:
    cfg = BenchConfig(bundle=str(tiny_bundle), streams=[1, 2], runs=1, warmup=1, frames=FRAMES, threads=1,
                      text="Hello.", positions=[20, 40], isolate=False)
    return run_bench(cfg)


@pytest.fixture
def bench_json(bench_doc, tmp_path):
    return write_json(bench_doc, tmp_path / "bench.json")


def test_document_has_meta_rows_and_ratios(bench_json):
    doc = json.loads(bench_json.read_text())  # strict JSON: no NaN
    meta = doc["meta"]
    for k in ("commit", "hostname", "cpu", "cores", "threads", "versions", "bundle_hash", "bundle_config", "text",
              "frames", "seed", "date"):
        assert k in meta
    assert meta["bundle_config"] == "tiny" and len(meta["bundle_hash"]) == 64 and meta["threads"] == 1
    assert "definition" in doc["ratios"] and "> 1 means Cadenza" in doc["ratios"]["definition"]
    engines = {(r["engine"], r["kind"], r["streams"]) for r in doc["rows"]}
    for e in ("ort", "torch-eager", "ort-naive"):
        assert {(e, "streams", 1), (e, "streams", 2), (e, "positions", 1)} <= engines
    assert "ort/torch-eager.frame_p50@1" in doc["ratios"]["values"]
    assert "ort/ort-naive.agg_x_real_time@2" in doc["ratios"]["values"]


def test_every_engine_does_identical_work(bench_doc):
    for row in (r for r in bench_doc["rows"] if r["kind"] == "streams"):
        for run in row["samples"]["runs"]:
            assert len(run["streams"]) == row["streams"]
            for s in run["streams"]:
                assert sum(s["chunk_samples"]) == FRAMES * 1920 and len(s["frame_times"]) == FRAMES
        m = row["metrics"]
        assert m["audio_per_stream"] == FRAMES * 1920 / 24000 and m["codes_per_audio_s"] == 12.5 * 4
        assert 0 < m["ttfa_p50"] <= m["ttfa_p95"] and m["peak_rss"] > 0


def test_ratios_are_speedups(bench_doc):
    rows = {(r["engine"], r["streams"]): r["metrics"] for r in bench_doc["rows"] if r["kind"] == "streams"}
    v = bench_doc["ratios"]["values"]
    ours, theirs = rows[("ort", 1)], rows[("torch-eager", 1)]
    assert v["ort/torch-eager.frame_p50@1"] == pytest.approx(theirs["frame_p50"] / ours["frame_p50"])
    assert v["ort/torch-eager.agg_x_real_time@1"] == pytest.approx(
        ours["agg_x_real_time"] / theirs["agg_x_real_time"])


def test_markdown_and_plot(bench_doc, tmp_path):
    md = markdown(bench_doc)
    assert "| ort | 1 |" in md and "| torch-eager | 2 |" in md and "ort/ort-naive" in md
    assert "pos 20" in md and "threads" in md
    png = plot(bench_doc, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_packaged_gate_evaluates_every_rule_on_a_real_result(bench_json):
    """Every packaged rule finds its metric in a real result (pass or fail is a matter of speed,
    which `make gate` checks in CI, not a unit test)."""
    code, report = gate.run_gate(bench_json)
    rules = [line for line in report.splitlines() if line.startswith("| ort")]
    assert rules and all(line.rstrip().endswith(("| pass |", "| FAIL |", "| skip |")) for line in rules), report
    assert code in (0, 1) and "missing" not in report.lower()


def _doctored(doc: dict, tmp_path, name: str = "regressed.json"):
    """The same result with Cadenza's per-frame latency 10x worse and an underrun."""
    bad = copy.deepcopy(doc)
    for key in [k for k in bad["ratios"]["values"] if ".frame_p50@" in k]:
        bad["ratios"]["values"][key] /= 10
    next(r for r in bad["rows"] if r["engine"] == "ort" and r["streams"] == 1)["metrics"]["underruns"] = 2
    return write_json(bad, tmp_path / name)


def test_gate_fails_on_a_regressed_result_with_the_reason(bench_doc, tmp_path):
    code, report = gate.run_gate(_doctored(bench_doc, tmp_path))
    assert code == 1
    assert "FAIL: ort/torch-eager.frame_p50@1 = " in report and "below the minimum 2" in report
    assert "ort.underruns@1 = 2 is above the maximum 0" in report


def test_baseline_rules_compare_with_a_stored_result(bench_doc, bench_json, tmp_path):
    """Against itself the stored-baseline rule passes; a 10x regression fails it (only that rule: the
    others depend on this machine's speed, which `make gate` judges, not a unit test)."""
    rules = tmp_path / "baseline.toml"
    rules.write_text('[[baseline]]\nkey = "ort/torch-eager.frame_p50@1"\nmax_regression = 0.5\nwhy = "stored"\n')
    code, report = gate.run_gate(bench_json, str(rules), baseline=bench_json)
    assert code == 0 and "stored" in report
    code, report = gate.run_gate(_doctored(bench_doc, tmp_path), str(rules), baseline=bench_json)
    assert code == 1 and "under the stored" in report
