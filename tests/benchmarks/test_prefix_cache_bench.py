"""The prefix-cache benchmark runs end to end (its numbers are reported, never asserted)."""
from __future__ import annotations


def test_prefix_cache_benchmark_runs(tiny_bundle, tmp_path):
    from cadenza.benchmarks.prefix_cache import main

    r = main(["--bundle", str(tiny_bundle), "--runs", "2", "--prompt-seconds", "2", "--frames", "2",
              "--json", str(tmp_path / "p.json")])
    assert r["prompt_frames"] == 25 and r["prefix_positions"] == 3 + len("A short sample of the voice.") + 25
    assert r["cache_hits"] == 2  # every stream after the first copied the cached prefix
    assert len(r["ttfa_cache_off_s"]) == len(r["ttfa_cache_on_s"]) == 2
    assert (tmp_path / "p.json").is_file()
