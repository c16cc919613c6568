"""`cadenza gate`: check a bench result against rules in TOML; non-zero exit on a failure.

Three kinds of rule (see `benchmarks/gates.toml`):

    [[ratio]]      # within this run: a speedup of Cadenza over a baseline
    key = "ort/torch-eager.frame_p50@1"
    min = 2.0

    [[baseline]]   # against a stored result (--baseline): the same speedup, at most 10% worse
    key = "ort/torch-eager.ttfa_p95@1"
    max_regression = 0.10

    [[absolute]]   # a row metric: "<engine>.<metric>@<streams>"
    key = "ort.underruns@1"
    max = 0

    [[ratio]]      # a peer ratio (`cadenza bench --baselines llama.cpp,ort-genai`): Cadenza's step time /
    key = "peers.cadenza/llama.cpp.step_p50@1"   # the peer's, so lower is better: gate it with max
    max = 1.1

Each rule may carry `why` (shown in the table). Baseline rules are skipped
without `--baseline`. Exit codes: 0 all pass, 1 a rule failed, 2 the input is
unusable (`GateError`: malformed JSON or TOML, a missing metric, a baseline of
another bundle).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tomllib

DEFAULT_RULES = Path(__file__).with_name("gates.toml")
KINDS = {"ratio": ("min", "max"), "absolute": ("min", "max"), "baseline": ("max_regression",)}


class GateError(ValueError):
    """The gate cannot judge: bad input (exit 2, one line)."""


@dataclass
class Verdict:
    rule: str
    measured: str
    threshold: str
    result: str  # "pass" | "FAIL" | "skip"
    reason: str = ""


def load_result(path: str | Path, what: str = "result") -> dict:
    """Read a `cadenza bench --json` document, checking its shape."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise GateError(f"cannot read the {what} {p}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GateError(f"the {what} {p} is not valid JSON ({e}); re-run `cadenza bench --json`") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), dict) for k in ("meta", "ratios")) \
            or not isinstance(doc.get("rows"), list) or not isinstance(doc["ratios"].get("values"), dict):
        raise GateError(f"the {what} {p} is not a `cadenza bench --json` document (needs meta, rows, ratios)")
    return doc


def load_rules(path: str | Path | None) -> list[tuple[str, dict]]:
    """Parse the TOML rules into (kind, rule) pairs, checking every field."""
    p = Path(path) if path else DEFAULT_RULES
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise GateError(f"cannot read the rules {p}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise GateError(f"the rules {p} are not valid TOML: {e}") from None
    unknown = set(data) - set(KINDS)
    if unknown:
        raise GateError(f"{p}: unknown rule table(s) {sorted(unknown)}; use [[ratio]], [[baseline]], [[absolute]]")
    rules = []
    for kind, limits in KINDS.items():
        for rule in data.get(kind, []):
            extra = set(rule) - {"key", "why", *limits}
            if not isinstance(rule.get("key"), str) or extra or not any(k in rule for k in limits):
                raise GateError(f"{p}: a [[{kind}]] rule needs key = \"...\" and one of {list(limits)}"
                                f"{f'; unknown field(s) {sorted(extra)}' if extra else ''} (got {rule})")
            if not all(isinstance(rule[k], (int, float)) for k in limits if k in rule):
                raise GateError(f"{p}: the limits of {rule['key']!r} must be numbers (got {rule})")
            rules.append((kind, rule))
    if not rules:
        raise GateError(f"{p} holds no rules")
    return rules


PEER_PREFIX = "peers."


def lookup(doc: dict, key: str, kind: str, what: str = "result") -> float:
    """A ratio ("ort/<baseline>.<metric>@<n>"), a peer ratio ("peers.cadenza/<peer>.step_p50@<batch>") or a
    row metric ("<engine>.<metric>@<n>")."""
    if key.startswith(PEER_PREFIX):
        return _peer_ratio(doc, key, kind, what)
    if kind in ("ratio", "baseline"):
        values = doc["ratios"]["values"]
        if key not in values:
            has = f"it has e.g. {sorted(values)[:3]}" if values else "it has none: bench with --baselines"
            raise GateError(f"the {what} has no ratio {key!r} ({has}); bench the baseline and stream count "
                            "the rule names")
        v = values[key]
    else:
        v = _row_metric(doc, key, what)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise GateError(f"{key!r} in the {what} was not measured (value {v!r})")
    return float(v)


def _peer_ratio(doc: dict, key: str, kind: str, what: str) -> float:
    if kind != "ratio":
        raise GateError(f"{key!r}: peer ratios are times (Cadenza's / the peer's, lower is better); gate them with a "
                        "[[ratio]] rule and max")
    values = (doc.get("peers") or {}).get("ratios") or {}
    v = values.get(key[len(PEER_PREFIX):])
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        has = f"it has {sorted(values)}" if values else "it has none: bench with --baselines llama.cpp,ort-genai"
        raise GateError(f"the {what} has no peer ratio {key!r} ({has})")
    return float(v)


def _row_metric(doc: dict, key: str, what: str) -> float:
    try:
        head, n = key.rsplit("@", 1)
        engine, metric = head.rsplit(".", 1)  # an engine name may hold a dot (llama.cpp); a metric never does
        n = int(n)
    except ValueError:
        raise GateError(f"absolute rule key {key!r} must read '<engine>.<metric>@<streams>'") from None
    for row in doc["rows"]:
        if isinstance(row, dict) and row.get("engine") == engine and row.get("streams") == n \
                and metric in row.get("metrics", {}):
            return row["metrics"][metric]
    raise GateError(f"the {what} has no {metric!r} for engine {engine!r} at {n} stream(s)")


def check_same_bundle(doc: dict, stored: dict) -> None:
    a, b = doc["meta"].get("bundle_hash"), stored["meta"].get("bundle_hash")
    if a != b:
        raise GateError(f"the baseline was measured on another bundle (hash {str(b)[:12]} vs {str(a)[:12]}); "
                        "compare results of the same bundle, or store a new baseline")


def judge(kind: str, rule: dict, doc: dict, stored: dict | None) -> Verdict:
    """One rule's verdict (raises GateError when a metric is missing)."""
    key, why = rule["key"], rule.get("why", "")
    name = f"{key}" + (f" ({why})" if why else "")
    if kind == "baseline":
        if stored is None:
            return Verdict(name, "-", f">= stored x {1 - rule['max_regression']:.2f}", "skip", "no --baseline given")
        now, then = lookup(doc, key, kind), lookup(stored, key, kind, "baseline")
        floor = then * (1 - rule["max_regression"])
        ok = now >= floor
        reason = "" if ok else f"{key} = {now:.3g}, below {floor:.3g} ({rule['max_regression']:.0%} under the stored {then:.3g})"
        return Verdict(name, f"{now:.3g} (stored {then:.3g})", f">= {floor:.3g}", "pass" if ok else "FAIL", reason)
    v = lookup(doc, key, kind)
    lo, hi = rule.get("min"), rule.get("max")
    bad, thr = [], []
    if lo is not None:
        thr.append(f">= {lo}")
        if v < lo:
            bad.append(f"{key} = {v:.3g} is below the minimum {lo}")
    if hi is not None:
        thr.append(f"<= {hi}")
        if v > hi:
            bad.append(f"{key} = {v:.3g} is above the maximum {hi}")
    return Verdict(name, f"{v:.3g}", " and ".join(thr), "FAIL" if bad else "pass", "; ".join(bad))


def evaluate(doc: dict, rules: list[tuple[str, dict]], stored: dict | None = None) -> list[Verdict]:
    """Every rule's verdict; a stored baseline must come from the same bundle."""
    if stored is not None:
        check_same_bundle(doc, stored)
    return [judge(kind, rule, doc, stored) for kind, rule in rules]


def table(verdicts: list[Verdict]) -> str:
    lines = ["| rule | measured | threshold | result |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {v.rule} | {v.measured} | {v.threshold} | {v.result} |" for v in verdicts]
    return "\n".join(lines)


def run_gate(result: str | Path, rules: str | Path | None = None, baseline: str | Path | None = None) -> tuple[int, str]:
    """Returns (exit code 0 / 1, the report text). Raises GateError for unusable input."""
    doc = load_result(result)
    stored = load_result(baseline, "baseline") if baseline else None
    verdicts = evaluate(doc, load_rules(rules), stored)
    failed = [v for v in verdicts if v.result == "FAIL"]
    lines = [table(verdicts), ""]
    lines += [f"FAIL: {v.reason} - {v.rule}" for v in failed]
    lines.append(f"gate: {len(failed)} of {len(verdicts)} rule(s) failed" if failed
                 else f"gate: all {sum(v.result == 'pass' for v in verdicts)} checked rule(s) pass")
    return (1 if failed else 0), "\n".join(lines)
