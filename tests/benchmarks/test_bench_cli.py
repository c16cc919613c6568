"""`cadenza bench` from the command line: bad arguments are one-line errors (exit 2),
and a full run (one worker process per engine) writes the JSON, the PNG and the tables."""
from __future__ import annotations

import json

import pytest

from cadenza.engine.cli import main


@pytest.mark.parametrize("extra, message", [
    pytest.param(["--streams", "1,x"], "--streams takes comma-separated integers", id="streams-not-ints"),
    pytest.param(["--streams", "0"], "--streams must be positive", id="streams-zero"),
    pytest.param(["--baselines", "torch-eager,tensorflow"], "unknown baseline(s) ['tensorflow']", id="baseline"),
    pytest.param(["--frames", "100000"], "exceed the model's 512 positions", id="frames-too-many"),
    pytest.param(["--runs", "0"], "--runs must be >= 1", id="runs"),
    pytest.param(["--positions", "3"], "--positions [3] must lie between the prompt", id="positions"),
    pytest.param(["--text", "   "], "text is empty", id="empty-text"),
])
def test_bad_arguments(tiny_bundle, tmp_path, capsys, extra, message):
    code = main(["bench", "--bundle", str(tiny_bundle), "--json", str(tmp_path / "b.json"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "b.json").exists()


def test_missing_bundle(tmp_path, capsys):
    assert main(["bench", "--bundle", str(tmp_path / "nope"), "--json", str(tmp_path / "b.json")]) == 2
    assert "is not a Cadenza bundle" in capsys.readouterr().err


def test_text_file_must_be_utf8(tiny_bundle, tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_bytes(b"\xff\xfe bad")
    assert main(["bench", "--bundle", str(tiny_bundle), "--text-file", str(f), "--json", str(tmp_path / "b")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_full_run_in_worker_processes(tiny_bundle, tmp_path, capfd):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(["bench", "--bundle", str(tiny_bundle), "--baselines", "ort-naive", "--streams", "1,2",
                 "--runs", "1", "--warmup", "0", "--frames", "6", "--threads", "1", "--json", str(out),
                 "--plot", str(png), "--markdown"])
    captured = capfd.readouterr()  # fd level: the workers' progress lines too
    assert code == 0, captured.err
    doc = json.loads(out.read_text())
    assert doc["meta"]["isolated"] and doc["meta"]["engines"] == ["ort", "ort-naive"]
    assert {(r["engine"], r["streams"]) for r in doc["rows"]} == {("ort", 1), ("ort", 2), ("ort-naive", 1),
                                                                  ("ort-naive", 2)}
    assert "ort/ort-naive.ttfa_p95@2" in doc["ratios"]["values"]
    assert png.stat().st_size > 10_000
    assert "| ort-naive | 2 |" in captured.out and "[bench] ort x1: run 1/1" in captured.err
