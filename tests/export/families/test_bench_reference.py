"""`cadenza bench --baselines reference` on family bundles: the families' own pipelines run beside
Cadenza's engine in one document, and the baselines that drive only the reference family are refused."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("family", ["orpheus", "csm"])
def test_reference_pipeline_runs_beside_the_engine(request, family):
    from cadenza.benchmarks.bench import BenchConfig, run_bench

    bundle = request.getfixturevalue(f"{family}_bundle")
    cfg = BenchConfig(bundle=str(bundle), baselines=["reference"], streams=[1], runs=1, warmup=0,
                      text="Hello there.", frames=6, threads=1, isolate=False)
    doc = run_bench(cfg)
    rows = {r["engine"]: r["metrics"] for r in doc["rows"] if r["kind"] == "streams"}
    assert set(rows) == {"ort", "reference"}
    assert rows["reference"]["frame_p50"] > 0 and rows["ort"]["frame_p50"] > 0
    assert "ort/reference.frame_p50@1" in doc["ratios"]["values"]
    frames = {r["engine"]: r["metrics"]["codes_per_audio_s"] for r in doc["rows"] if r["kind"] == "streams"}
    if family == "orpheus":  # Orpheus' own decoder never emits frame 0 or the last two frames: 3 of 6
        assert frames["reference"] == pytest.approx(2 * frames["ort"])


def test_reference_family_baselines_are_refused_on_a_family_bundle(orpheus_bundle):
    from cadenza.benchmarks.bench import BenchConfig, run_bench

    with pytest.raises(ValueError, match="--baselines reference"):
        run_bench(BenchConfig(bundle=str(orpheus_bundle), baselines=["torch-eager"], streams=[1], runs=1))


def test_the_manifest_names_a_local_checkpoint_by_its_absolute_path(orpheus_bundle, orpheus_dir, snac_dir,
                                                                     tmp_path, monkeypatch):
    """The bench's reference baseline reloads the checkpoint from the manifest, from any directory."""
    import json

    from pathlib import Path

    from cadenza.export.families.checkpoint import provenance

    orpheus_dir, snac_dir = Path(orpheus_dir), Path(snac_dir)
    src = json.loads((orpheus_bundle / "manifest.json").read_text())["source"]
    assert src["checkpoint"] == str(orpheus_dir.resolve()) and src["codec"] == str(snac_dir.resolve())
    monkeypatch.chdir(orpheus_dir.parent)
    assert provenance(orpheus_dir.name) == str(orpheus_dir.resolve())
    assert provenance("canopylabs/orpheus-3b-0.1-ft") == "canopylabs/orpheus-3b-0.1-ft"
