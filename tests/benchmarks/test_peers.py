"""The peer baselines on `tiny`: the HF conversion equals Cadenza's backbone, GenAI and llama.cpp agree with it
and time in rotation, the bench's peers and floor sections, the gate's peer keys, and the typed errors.

GenAI runs where onnxruntime_genai is installed (the [dev] extra has it), llama.cpp where llama_cpp and its
converter are (the [peers] extra + `python -m cadenza.benchmarks.peer_setup`); otherwise they are skipped
with the reason. No assertion is about speed.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

pytest.importorskip("torch", reason="the peers convert PyTorch weights: pip install -e .[export]")
pytest.importorskip("transformers", reason="the HF conversion needs transformers: pip install -e .[export]")
pytest.importorskip("sentencepiece", reason="the converted checkpoint's tokenizer needs sentencepiece: "
                                            "pip install -e .[dev] (or [peers])")

from cadenza.benchmarks import peer_convert as pc  # noqa: E402
from cadenza.benchmarks.peers import PeerConfig, compared, run_peers  # noqa: E402
from cadenza.engine.contract.bundle import Bundle  # noqa: E402

QUICK = dict(rounds=1, steps=2, warm=1, context=6, window=6, batches=[1, 2], agree_prompt=5, agree_steps=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("peers_cache")


@pytest.fixture(scope="module")
def int4_bundle(tiny_model, tmp_path_factory):
    from cadenza.export.onnx.to_onnx import to_onnx

    return to_onnx(tiny_model, tmp_path_factory.mktemp("tiny_int4"), progress=None, torch_weights=True,
                   precision="int4", block_size=32)


def cadenza_logits(bundle_path, prompt, steps) -> np.ndarray:
    """Cadenza's backbone graph through the engine's Stack (in process), batch 1."""
    from cadenza.benchmarks.peer_engines import CadenzaSteps, agree

    b = Bundle.load(bundle_path, verify=False)
    e = CadenzaSteps(str(bundle_path), 1, 1, 64, compared(b)[0])
    try:
        return agree(e, np.asarray(prompt), np.asarray(steps))
    finally:
        e.close()


def test_hf_checkpoint_equals_cadenzas_backbone(tiny_bundle, cache):
    import torch
    from transformers import LlamaForCausalLM

    b = Bundle.load(tiny_bundle, verify=False)
    hf_dir = pc.hf_checkpoint(b, pc.cache_dir(b, cache))
    hf = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    rng = np.random.default_rng(1)
    prompt, steps = rng.integers(3, 64, 12), rng.integers(3, 64, 4)
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(np.r_[prompt, steps][None])).logits[0, len(prompt) - 1:].numpy()
    ours = cadenza_logits(tiny_bundle, prompt, steps)
    assert ours.shape == theirs.shape == (5, 65)
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=0)
    assert hf.config.vocab_size == b.constants.codebook_size + 1


def test_a_bundle_without_torch_weights_names_the_export_flag(external_bundle, cache):
    b = Bundle.load(external_bundle, verify=False)
    with pytest.raises(pc.PeerError, match="--torch-weights"):
        pc.hf_checkpoint(b, pc.cache_dir(b, cache))


def test_targets_follow_the_bundles_precision(tiny_bundle, int4_bundle):
    t = pc.Target.of(Bundle.load(tiny_bundle, verify=False))
    assert (t.precision, t.block_size, t.gguf_type, t.tag) == ("fp32", None, "f32", "fp32")
    t = pc.Target.of(Bundle.load(int4_bundle, verify=False))
    assert (t.precision, t.block_size, t.gguf_type, t.tag) == ("int4", 32, "q4_0", "int4-b32")


def test_a_family_without_a_llama_backbone_is_refused(tiny_bundle, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(tiny_bundle, d)
    m = json.loads((d / "manifest.json").read_text())
    b = Bundle(d, m)
    b.manifest = {**m, "family": "csm"}
    with pytest.raises(pc.PeerError, match="Llama backbone"):
        pc.Target.of(b)


def test_peer_config_is_checked():
    with pytest.raises(ValueError, match="unknown peer"):
        PeerConfig(["vllm"]).check()
    with pytest.raises(ValueError, match="batch"):
        PeerConfig(["ort-genai"], batches=[0]).check()


def _check_section(s: dict, peers: list[str], precision: str, min_cos: float) -> None:
    assert s["precision"] == precision
    for name in peers:
        a = s["agreement"][name]
        assert a["cosine_min"] >= min_cos and a["positions"] == QUICK["agree_steps"] + 1
    for B in ("1", "2"):
        assert set(s["steps"][B]) == {"cadenza", *peers}
        for st in s["steps"][B].values():
            assert st["n"] == QUICK["rounds"] * QUICK["steps"] and 0 < st["p10_ms"] <= st["median_ms"]
        for name in peers:
            r = s["ratios"][f"cadenza/{name}.step_p50@{B}"]
            assert math.isfinite(r) and r > 0


def test_genai_agrees_and_times(tiny_bundle, int4_bundle, cache):
    pytest.importorskip("onnxruntime_genai", reason="the ORT-GenAI peer needs onnxruntime-genai: pip install -e .[dev]")
    s = run_peers(str(tiny_bundle), PeerConfig(["ort-genai"], threads=1, cache=str(cache), **QUICK))
    _check_section(s, ["ort-genai"], "fp32", 0.99999)
    s4 = run_peers(str(int4_bundle), PeerConfig(["ort-genai"], threads=1, cache=str(cache), **QUICK))
    _check_section(s4, ["ort-genai"], "int4", 0.5)
    import onnx

    model = onnx.load(str(pc.cache_dir(Bundle.load(int4_bundle, verify=False), cache) / "genai-int4-b32" / "model.onnx"))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    attrs = {a.name: a.i for a in nbits[0].attribute}
    assert nbits and attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs["accuracy_level"] == 4


def _llama_cpp_or_skip():
    pytest.importorskip("llama_cpp", reason="the llama.cpp peer needs llama-cpp-python: pip install -e .[peers]")
    try:
        pc.llama_cpp_source()
    except pc.PeerError as e:
        pytest.skip(str(e))


def test_llama_cpp_agrees_and_times(tiny_bundle, int4_bundle, cache):
    _llama_cpp_or_skip()
    s = run_peers(str(tiny_bundle), PeerConfig(["llama.cpp"], threads=1, cache=str(cache), **QUICK))
    _check_section(s, ["llama.cpp"], "fp32", 0.99999)
    s4 = run_peers(str(int4_bundle), PeerConfig(["llama.cpp"], threads=1, cache=str(cache), **QUICK))
    _check_section(s4, ["llama.cpp"], "int4", 0.5)
    assert s4["gguf_type"] == "q4_0" and s4["models"]["llama.cpp"].endswith("model-q4_0.gguf")


def test_bench_writes_peers_and_floor_and_the_gate_reads_them(tiny_bundle, cache, tmp_path):
    pytest.importorskip("onnxruntime_genai", reason="the ORT-GenAI peer needs onnxruntime-genai: pip install -e .[dev]")
    from cadenza.benchmarks.bench import BenchConfig, run_bench, write_json
    from cadenza.benchmarks.gate import GateError, run_gate
    from cadenza.benchmarks.report import markdown

    peer = PeerConfig([], cache=str(cache), **QUICK)
    cfg = BenchConfig(bundle=str(tiny_bundle), baselines=["ort-genai"], streams=[], threads=1, isolate=False, peer=peer)
    doc = run_bench(cfg)
    assert doc["rows"] == [] and doc["peers"]["agreement"]["ort-genai"]["cosine_min"] >= 0.99999
    fl = doc["floor"]
    assert fl["bandwidth"]["best_gb_s"] > 0 and 0 < fl["step_weight_bytes"] < Bundle.load(tiny_bundle).weight_bytes["backbone"]
    assert fl["step_floor_ms"] > 0 and set(doc["peers"]["floor_ms"]) == {"1", "2"}
    text = markdown(doc)
    assert "Peers on the same weights" in text and "Memory floor of a backbone step" in text
    path = write_json(doc, tmp_path / "doc.json")
    rules = tmp_path / "rules.toml"
    rules.write_text('[[ratio]]\nkey = "peers.cadenza/ort-genai.step_p50@1"\nmax = 1000.0\n')
    assert run_gate(path, rules)[0] == 0
    rules.write_text('[[ratio]]\nkey = "peers.cadenza/llama.cpp.step_p50@1"\nmax = 1.0\n')
    with pytest.raises(GateError, match="no peer ratio"):
        run_gate(path, rules)
    rules.write_text('[[baseline]]\nkey = "peers.cadenza/ort-genai.step_p50@1"\nmax_regression = 0.1\n')
    with pytest.raises(GateError, match="lower is better"):
        run_gate(path, rules, path)


def test_streams_may_be_empty_only_with_peers(tiny_bundle):
    from cadenza.benchmarks.bench import BenchConfig

    b = Bundle.load(tiny_bundle, verify=False)
    with pytest.raises(ValueError, match="empty only with peer"):
        BenchConfig(bundle=str(tiny_bundle), baselines=[], streams=[]).check(b)
    cfg = BenchConfig(bundle=str(tiny_bundle), baselines=["llama.cpp", "ort-genai", "torch-eager"], streams=[1])
    cfg.check(b)
    assert cfg.peers == ["llama.cpp", "ort-genai"] and cfg.stream_baselines(b) == ["torch-eager"]
