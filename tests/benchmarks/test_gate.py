"""`cadenza gate` on hand-made results: verdicts, and unusable input as a clear exit-2 error."""
from __future__ import annotations

import json

import pytest

from cadenza.benchmarks.gate import GateError, evaluate, load_rules, run_gate
from cadenza.engine.cli import main

RULES = """
[[ratio]]
key = "ort/torch-eager.frame_p50@1"
min = 2.0
why = "2x faster"

[[absolute]]
key = "ort.underruns@1"
max = 0

[[baseline]]
key = "ort/torch-eager.ttfa_p95@1"
max_regression = 0.10
"""


def result(frame=3.0, ttfa=2.0, underruns=0, bundle="a" * 64) -> dict:
    return {"schema": "cadenza-bench/1", "meta": {"bundle_hash": bundle},
            "rows": [{"engine": "ort", "kind": "streams", "streams": 1, "metrics": {"underruns": underruns}}],
            "ratios": {"definition": "speedup", "values": {"ort/torch-eager.frame_p50@1": frame,
                                                           "ort/torch-eager.ttfa_p95@1": ttfa}}}


@pytest.fixture
def files(tmp_path):
    def write(name: str, content) -> str:
        p = tmp_path / name
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(p)

    write("rules.toml", RULES)
    return write


def test_verdicts(files):
    rules = load_rules(files("rules.toml", RULES))
    v = evaluate(result(), rules)
    assert [x.result for x in v] == ["pass", "pass", "skip"]
    v = evaluate(result(frame=1.5, underruns=1), rules, stored=result())
    assert [x.result for x in v] == ["FAIL", "FAIL", "pass"]
    assert "below the minimum 2.0" in v[0].reason and "above the maximum 0" in v[1].reason
    v = evaluate(result(ttfa=1.7), rules, stored=result(ttfa=2.0))  # 15% worse than stored
    assert v[2].result == "FAIL" and "10% under the stored 2" in v[2].reason


def test_cli_exit_codes_and_table(files, capsys):
    rules = files("rules.toml", RULES)
    assert main(["gate", files("ok.json", result()), "--rules", rules]) == 0
    out = capsys.readouterr().out
    assert "| rule | measured | threshold | result |" in out and "all 2 checked rule(s) pass" in out
    assert main(["gate", files("bad.json", result(frame=1.0)), "--rules", rules]) == 1
    out = capsys.readouterr().out
    assert "FAIL: ort/torch-eager.frame_p50@1 = 1 is below the minimum 2.0 - " in out and "1 of 3" in out


@pytest.mark.parametrize("content, message", [
    pytest.param("{not json", "is not valid JSON", id="malformed"),
    pytest.param([1, 2], "not a `cadenza bench --json` document", id="not-an-object"),
    pytest.param({"meta": {}, "rows": []}, "needs meta, rows, ratios", id="no-ratios"),
    pytest.param({**result(), "ratios": {"values": {}}}, "has no ratio 'ort/torch-eager.frame_p50@1'",
                 id="missing-ratio"),
    pytest.param({**result(), "rows": []}, "no 'underruns' for engine 'ort' at 1 stream", id="missing-row"),
    pytest.param(result(frame=None), "was not measured", id="null-metric"),
])
def test_unusable_results_exit_2_with_one_line(files, capsys, content, message):
    code = main(["gate", files("r.json", content), "--rules", files("rules.toml", RULES)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_baseline_from_another_bundle_is_refused(files, capsys):
    args = ["gate", files("r.json", result()), "--baseline", files("s.json", result(bundle="b" * 64)),
            "--rules", files("rules.toml", RULES)]
    assert main(args) == 2
    assert "another bundle" in capsys.readouterr().err


def test_missing_result_file(files):
    with pytest.raises(GateError, match="cannot read the result"):
        run_gate(files("rules.toml", RULES) + ".missing", files("rules.toml", RULES))


@pytest.mark.parametrize("toml, message", [
    pytest.param("[[ratio]\nkey=1", "not valid TOML", id="malformed"),
    pytest.param('[[ratio]]\nkey = "x"\n', "needs key", id="no-limit"),
    pytest.param('[[ratio]]\nkey = "x"\nmin = "2"\n', "must be numbers", id="string-limit"),
    pytest.param('[[ratio]]\nkey = "x"\nmin = 2\nmni = 3\n', "unknown field(s) ['mni']", id="typo"),
    pytest.param('[[speed]]\nkey = "x"\nmin = 2\n', "unknown rule table(s) ['speed']", id="unknown-kind"),
    pytest.param("", "holds no rules", id="empty"),
])
def test_bad_rules(files, toml, message):
    with pytest.raises(GateError) as e:
        load_rules(files("bad.toml", toml))
    assert message in str(e.value)


def test_packaged_rules_parse():
    kinds = {kind for kind, _ in load_rules(None)}
    assert kinds == {"ratio", "absolute", "baseline"}
