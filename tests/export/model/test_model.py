"""The reference model: seeded init, save/load, the eager `generate()`, the K = 1
variant and the sizes of the benchmark configs."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cadenza.engine.contract import text as tok
from cadenza.engine.contract.length import LengthPolicy  # noqa: E402
from cadenza.export.model.config import SIZES, TransformerConfig, TTSConfig  # noqa: E402
from cadenza.export.onnx.graphs import codec_specs, reference_parts  # noqa: E402
from cadenza.export.onnx.stack import portable_specs  # noqa: E402
from cadenza.export.model.model import TTSModel  # noqa: E402
from cadenza.export.reference import RefSampling, generate  # noqa: E402
from cadenza.export.onnx.to_onnx import build_model  # noqa: E402

TEXT = "Hello world, this is a test."


def _state_equal(a: TTSModel, b: TTSModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- config --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SIZES))
def test_config_dict_roundtrip(name):
    cfg = TTSConfig.from_name(name)
    assert TTSConfig.from_dict(cfg.to_dict()) == cfg


def test_config_overrides_and_errors():
    cfg = TTSConfig.from_name("tiny", n_codebooks=1, seed=3)
    assert (cfg.n_codebooks, cfg.seed, cfg.codec.n_codebooks) == (1, 3, 1)
    assert TTSConfig.from_name("tiny").n_codebooks == 4  # the named size is not mutated
    with pytest.raises(ValueError, match="unknown model size"):
        TTSConfig.from_name("huge")
    with pytest.raises(ValueError):
        TransformerConfig(dim=64, n_heads=3)


# --- seeded init -------------------------------------------------------------------
def test_seeded_init_is_deterministic(tiny_model):
    again = build_model("tiny", 0)
    assert _state_equal(tiny_model, again)


def test_different_seed_gives_different_weights(tiny_model):
    other = build_model("tiny", 1).state_dict()
    ref = tiny_model.state_dict()
    same = [k for k in ref if ref[k].is_floating_point() and ref[k].numel() > 1
            and not torch.all(ref[k] == ref[k].flatten()[0]) and torch.equal(ref[k], other[k])]
    assert not same, f"seed 1 left these randomly initialised tensors equal to seed 0: {same}"


def test_init_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    build_model("tiny", 5)
    assert torch.equal(torch.rand(4), expected)


# --- save / load -----------------------------------------------------------------
def test_save_load_roundtrip(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "w")
    loaded = TTSModel.load(path)
    assert loaded.cfg == tiny_model.cfg
    assert _state_equal(tiny_model, loaded)
    assert not loaded.training
    assert torch.equal(generate(loaded, TEXT, frames=5), generate(tiny_model, TEXT, frames=5))


def test_load_rejects_mismatched_checkpoint(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "w")
    other = TTSConfig.from_name("tiny", n_codebooks=1)
    (path / "config.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises((ValueError, RuntimeError)):
        TTSModel.load(path)


# --- generate() ------------------------------------------------------------------
def test_generate_greedy_is_deterministic_and_bounded(tiny_model):
    cfg = tiny_model.cfg
    a, b = generate(tiny_model, TEXT), generate(tiny_model, TEXT)
    assert a.dtype == torch.long and a.dim() == 2 and a.shape[0] == cfg.n_codebooks
    assert torch.equal(a, b)
    lo, hi = LengthPolicy().bounds(tok.check_text(TEXT), cfg.codec.frame_rate)
    assert lo <= a.shape[1] <= hi
    assert int(a.min()) >= 0 and int(a.max()) < cfg.codebook_size  # no EOS id among the codes


def test_generate_normalises_whitespace(tiny_model):
    assert torch.equal(generate(tiny_model, "  Hello \n world.  ", frames=4),
                       generate(tiny_model, "Hello world.", frames=4))


@pytest.mark.parametrize("n", [1, 3, 40])
def test_generate_exact_frames(tiny_model, n):
    codes = generate(tiny_model, "Hi.", frames=n)  # 40 > the text's max_frames: still exactly 40
    assert codes.shape == (tiny_model.cfg.n_codebooks, n)


def test_generate_prefix_stable(tiny_model):
    """Forcing more frames only appends: the first frames are the same."""
    assert torch.equal(generate(tiny_model, TEXT, frames=6)[:, :3], generate(tiny_model, TEXT, frames=3))


def test_voice_reaches_the_logits(tiny_model):
    """The voice slot conditions the prompt: a voice moves the first-frame logits (random
    weights couple it too weakly to flip greedy codes, so the logits are compared)."""
    bb = tiny_model.backbone
    ids = torch.tensor([tok.prompt_tokens(TEXT)])  # [1, P]
    g = torch.Generator().manual_seed(0)
    voice = torch.nn.functional.normalize(torch.randn(1, tiny_model.cfg.speaker_dim, generator=g), dim=-1)
    pk, pv = bb.transformer.empty_cache(1)

    def first_logits(v):
        with torch.no_grad():
            h, _, _ = bb(bb.embed_prompt(ids, v), torch.arange(ids.shape[1])[None], pk, pv, torch.zeros(1, dtype=torch.long))
            return bb.head(h[:, -1])

    assert float((first_logits(voice) - first_logits(torch.zeros_like(voice))).abs().max()) > 1e-2


def test_generate_sampling_is_seeded(tiny_model):
    s = RefSampling(temperature=1.0, top_k=20, top_p=0.9, seed=3)
    a = generate(tiny_model, TEXT, frames=6, sampling=s)
    assert torch.equal(a, generate(tiny_model, TEXT, frames=6, sampling=s))
    assert int(a.max()) < tiny_model.cfg.codebook_size


def test_generate_rejects_empty_text(tiny_model):
    with pytest.raises(tok.TextError):
        generate(tiny_model, "   ")


# --- K = 1 -----------------------------------------------------------------------
def test_k1_generate(tiny_model_k1):
    assert tiny_model_k1.depth is None
    codes = generate(tiny_model_k1, TEXT)
    lo, hi = LengthPolicy().bounds(tok.check_text(TEXT), tiny_model_k1.cfg.codec.frame_rate)
    assert codes.shape[0] == 1 and lo <= codes.shape[1] <= hi
    assert generate(tiny_model_k1, TEXT, frames=5).shape == (1, 5)


def test_k1_export_and_onnx_step(tiny_model_k1, tiny_specs_k1, tiny_bundle_k1, tiny_ort_k1):
    """The K = 1 bundle has no depth graph, and its ONNX backbone step matches PyTorch (1e-4)."""
    from stack_io import run_stack

    assert "depth" not in tiny_specs_k1
    assert not (tiny_bundle_k1 / "depth.onnx").exists()
    spec = tiny_specs_k1["backbone"]
    cfg = tiny_model_k1.cfg
    b, C = cfg.backbone, cfg.codebook_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, C, (2, 1, 1), generator=g)
    pos = torch.tensor([3, 6], dtype=torch.int32)
    cache = torch.randn(b.n_layers, 2, 2, b.n_kv_heads, 8, b.head_dim, generator=g)
    feeds = {"ids": ids, "voice": torch.zeros(2, cfg.speaker_dim), "seqlens_k": pos, "query_seqlens": torch.ones(2, dtype=torch.int32)}
    manifest = json.loads((tiny_bundle_k1 / "manifest.json").read_text())
    got = run_stack(tiny_ort_k1.session("backbone"), manifest["graphs"]["backbone"],
                    {k: v.numpy() for k, v in feeds.items()}, cache.numpy().copy())
    with torch.no_grad():
        ref = spec.module(*feeds.values(), *[cache[l, i, :, :, :6] for l in range(b.n_layers) for i in (0, 1)])
    assert float(np.abs(got["logits"] - ref[0].numpy()).max()) <= 1e-4
    pcm = tiny_ort_k1.run("codec_decode", {"codes": np.zeros((1, 1, 2), np.int64),
                                           **{s.name: np.zeros([1, *s.shape[1:]], np.float32)
                                              for s in tiny_specs_k1["codec_decode"].inputs[1:]}})["pcm"]
    assert pcm.shape == (1, 2 * tiny_model_k1.cfg.codec.hop)


# --- the benchmark sizes (built on the meta device: no memory) ------------------
@pytest.mark.parametrize("name,lo,hi,k", [
    pytest.param("small", 80e6, 120e6, 8, id="small"),
    pytest.param("1b", 1.0e9, 1.3e9, 32, id="1b"),
])
def test_benchmark_sizes(name, lo, hi, k):
    cfg = TTSConfig.from_name(name)
    with torch.device("meta"):
        model = TTSModel(cfg)
    n = model.n_params("backbone")
    assert lo <= n <= hi, f"{name} backbone has {n / 1e6:.1f} M parameters"
    assert cfg.n_codebooks == k and model.depth is not None
    assert len(model.backbone.transformer.layers) == cfg.backbone.n_layers
    roles = [s.role for s in portable_specs(*reference_parts(model), cfg.speaker_dim) + codec_specs(model)]
    assert roles == ["backbone", "depth", "codec_decode", "codec_encode", "speaker_encode"]
