"""ONNX Runtime (CPU) against the PyTorch modules, graph by graph, in both graph forms.

The transformer stacks (`backbone`, `depth`) run on random inputs in ONNX Runtime, as the
portable graphs (standard operators, new K/V returned) and as the fused graphs
(`GroupQueryAttention`, K/V written in place into the bound cache), and are compared with
the portable PyTorch module (`cadenza.export.onnx.stack`) on the same inputs. The codec and
speaker graphs are compared with their wrapper modules. Tolerances (max-abs): 1e-4 for logits,
hidden states, K/V and codec states; 1e-5 for PCM and the speaker embedding; codes exact.

Batched rows sit at different positions (a padded prefill after per-row cached prefixes,
steps at their own positions, a voice's acoustic frames); further tests check that each row's
result equals that row run alone, that cache entries past a row's valid length are ignored,
and that a fused graph writes exactly each row's new positions and nothing else.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from cadenza.engine.contract import text as tok  # noqa: E402
from stack_io import run_stack  # noqa: E402

TOL_DEFAULT = 1e-4  # logits, hidden, new K/V, codec states
TOL = {"pcm": 1e-5, "embedding": 1e-5, "codes": 0}
ISOLATION_TOL = 1e-5  # a row in a batch vs the same row alone
GARBAGE_TOL = 1e-6  # cache entries past the valid length must not matter
T_CACHE = 24  # cache positions of the test inputs (a padded chunk must fit after every row's prefix)


# --- stack inputs ---------------------------------------------------------------
def backbone_inputs(model, starts, seqs, gen, frames=False):
    """Rows appending len(seqs[b]) positions after starts[b] cached ones: text tokens, or (frames) codes."""
    cfg = model.cfg
    K, C, B, P = cfg.n_codebooks, cfg.codebook_size, len(starts), max(seqs)
    null = K * C + cfg.text_vocab
    ids = torch.full((B, P, K), null)
    for b, n in enumerate(seqs):
        if frames:
            ids[b, :n] = torch.randint(0, C, (n, K), generator=gen) + torch.arange(K) * C
        else:
            ids[b, :n, 0] = K * C + torch.randint(0, tok.N_BYTES, (n,), generator=gen)
    voice = torch.nn.functional.normalize(torch.randn(B, cfg.speaker_dim, generator=gen), dim=-1)
    if frames:
        voice = torch.zeros_like(voice)
    lens = torch.tensor(seqs, dtype=torch.int32)
    feeds = {"ids": ids, "voice": voice, "seqlens_k": torch.tensor(starts, dtype=torch.int32) + lens - 1,
             "query_seqlens": lens}
    return feeds, _cache(cfg.backbone, B, gen), list(zip(starts, seqs))


def depth_inputs(model, B, pos, gen):
    cfg = model.cfg
    d, C = cfg.depth, cfg.codebook_size
    feeds = {"hidden": torch.randn(B, cfg.backbone.dim, generator=gen),
             "ids": torch.randint(0, C, (B,), generator=gen) + pos * C, "depth_pos": torch.tensor([pos])}
    return feeds, _cache(d, B, gen, T=cfg.n_codebooks - 1), [(pos, 1)] * B


def _cache(t, B, gen, T=T_CACHE):
    return torch.randn(t.n_layers, 2, B, t.n_kv_heads, T, t.head_dim, generator=gen).numpy()


STACK_CASES = [
    # role, id, builder(model, gen) -> (feeds, cache [L, 2, B, Hkv, T, Dh], [(start, n)] per row)
    ("backbone", "prefill_b1", lambda m, g: backbone_inputs(m, [0], [8], g)),
    ("backbone", "prefill_b3_mixed_start_len", lambda m, g: backbone_inputs(m, [0, 4, 10], [8, 5, 1], g)),
    ("backbone", "frames_b1_after_prefix", lambda m, g: backbone_inputs(m, [6], [3], g, frames=True)),
    ("backbone", "step_b3_mixed_pos", lambda m, g: backbone_inputs(m, [0, 7, 12], [1, 1, 1], g, frames=True)),
    ("backbone", "step_b1_empty", lambda m, g: backbone_inputs(m, [0], [1], g, frames=True)),
    ("depth", "b1_pos0", lambda m, g: depth_inputs(m, 1, 0, g)),
    ("depth", "b3_pos0", lambda m, g: depth_inputs(m, 3, 0, g)),
    ("depth", "b3_pos2", lambda m, g: depth_inputs(m, 3, 2, g)),
]


def torch_stack(spec, feeds, cache, spans) -> dict:
    """The portable module on the valid part of the cache: outputs plus `new` [L, 2, B, Hkv, P, Dh]."""
    T = max(s for s, _ in spans)
    past = [torch.from_numpy(cache[l, i, :, :, :T].copy()) for l in range(cache.shape[0]) for i in (0, 1)]
    ins = [torch.as_tensor(feeds[t.name]) for t in spec.inputs if not t.name.startswith("past_")]
    with torch.no_grad():
        out = spec.module(*ins, *past)
    names = [t.name for t in spec.outputs]
    res = {n: o.numpy() for n, o in zip(names, out) if not n.startswith("new_")}
    L = cache.shape[0]
    res["new"] = np.stack([np.stack([out[names.index(f"new_key.{l}")].numpy(), out[names.index(f"new_value.{l}")].numpy()])
                           for l in range(L)])
    return res


class Sessions:
    def __init__(self, bundle):
        self.bundle, self.sessions = bundle, {}
        import json

        self.manifest = json.loads((bundle / "manifest.json").read_text())

    def run(self, role, feeds, cache):
        if role not in self.sessions:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            self.sessions[role] = ort.InferenceSession(str(self.bundle / f"{role}.onnx"), so,
                                                       providers=["CPUExecutionProvider"])
        feeds = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in feeds.items()}
        return run_stack(self.sessions[role], self.manifest["graphs"][role], feeds, cache)


@pytest.fixture(scope="module", params=["portable", "fused"])
def stacks(request, tiny_bundle, tiny_bundle_portable):
    return request.param, Sessions(tiny_bundle if request.param == "fused" else tiny_bundle_portable)


def onnx_stack(stacks, role, feeds, cache, spans) -> tuple[dict, np.ndarray]:
    """(outputs with `new` in the portable layout, the cache after the call) for either form."""
    form, sess = stacks
    after = cache.copy()
    out = sess.run(role, feeds, after)
    if form == "fused":  # read the written entries back out of the cache, and check nothing else moved
        P = max(n for _, n in spans)
        new = np.zeros(cache.shape[:4] + (P, cache.shape[5]), cache.dtype)
        expect = cache.copy()
        for b, (s, n) in enumerate(spans):
            new[:, :, b, :, :n] = after[:, :, b, :, s:s + n]
            expect[:, :, b, :, s:s + n] = after[:, :, b, :, s:s + n]
        np.testing.assert_array_equal(after, expect, err_msg=f"{role}: the fused graph wrote outside the new positions")
        out["new"] = new
    return out, after


@pytest.mark.parametrize("role,build", [pytest.param(r, b, id=f"{r}-{i}") for r, i, b in STACK_CASES])
def test_stack_matches_torch(role, build, stacks, tiny_model, tiny_specs):
    feeds, cache, spans = build(tiny_model, torch.Generator().manual_seed(1234))
    ref = torch_stack(tiny_specs[role], feeds, cache, spans)
    got, _ = onnx_stack(stacks, role, feeds, cache, spans)
    assert set(got) == set(ref)
    for name, r in ref.items():
        g = got[name]
        if name == "new":  # only each row's valid new entries
            for b, (_, n) in enumerate(spans):
                err = float(np.abs(g[:, :, b, :, :n] - r[:, :, b, :, :n]).max())
                assert err <= TOL_DEFAULT, f"{stacks[0]} {role} new K/V row {b}: max-abs {err:.3g}"
        else:
            assert g.shape == r.shape and g.dtype == r.dtype, name
            err = float(np.abs(g - r).max())
            assert err <= TOL_DEFAULT, f"{stacks[0]} {role} {name}: max-abs {err:.3g} > {TOL_DEFAULT}"


def test_batched_rows_equal_rows_alone(stacks, tiny_model):
    """Row b of a padded batch (rows at different positions) equals row b run alone, within 1e-5."""
    feeds, cache, spans = backbone_inputs(tiny_model, [0, 4, 10], [8, 5, 1], torch.Generator().manual_seed(7))
    batched, after = onnx_stack(stacks, "backbone", feeds, cache, spans)
    for b, (s, n) in enumerate(spans):
        one = {k: (v[b:b + 1, :n] if k == "ids" else v[b:b + 1]) for k, v in feeds.items()}
        single, _ = onnx_stack(stacks, "backbone", one, np.ascontiguousarray(cache[:, :, b:b + 1]), [(s, n)])
        for name in ("logits", "hidden"):
            err = float(np.abs(batched[name][b:b + 1] - single[name]).max())
            assert err <= ISOLATION_TOL, f"{stacks[0]} row {b} {name}: max-abs {err:.3g}"
        err = float(np.abs(batched["new"][:, :, b:b + 1, :, :n] - single["new"][:, :, :, :, :n]).max())
        assert err <= ISOLATION_TOL, f"{stacks[0]} row {b} new K/V: max-abs {err:.3g}"


@pytest.mark.parametrize("role", ["backbone", "depth"])
def test_cache_past_valid_length_is_ignored(role, stacks, tiny_model):
    """Entries at or past each row's valid length (zeros vs huge garbage) change no output (1e-6)."""
    g = torch.Generator().manual_seed(11)
    feeds, cache, spans = (backbone_inputs(tiny_model, [0, 5, 11], [1, 1, 1], g, frames=True) if role == "backbone"
                           else depth_inputs(tiny_model, 2, 2, g))
    clean, garbage = cache.copy(), cache.copy()
    for b, (s, _) in enumerate(spans):
        clean[:, :, b, :, s:] = 0
        garbage[:, :, b, :, s:] = 1e4 + 1e3 * np.random.default_rng(b).standard_normal(garbage[:, :, b, :, s:].shape)
    a, _ = onnx_stack(stacks, role, feeds, clean, spans)
    z, _ = onnx_stack(stacks, role, feeds, garbage, spans)
    for name in a:
        err = float(np.abs(a[name] - z[name]).max())
        assert err <= GARBAGE_TOL, f"{stacks[0]} {role} {name}: garbage past the valid length moved it by {err:.3g}"


def test_portable_graphs_use_standard_operators_only(tiny_bundle_portable):
    """The portable form parses in any ONNX runtime: every node is in the default domain."""
    import onnx

    for role in ("backbone", "depth"):
        model = onnx.load(str(tiny_bundle_portable / f"{role}.onnx"))
        domains = {n.domain for n in model.graph.node}
        assert domains <= {"", "ai.onnx"}, f"{role}: {domains}"


def test_fused_graphs_use_the_fused_operators(tiny_bundle):
    import onnx

    ops = {n.op_type for n in onnx.load(str(tiny_bundle / "backbone.onnx")).graph.node}
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= ops
    assert "Softmax" not in ops and "Concat" not in ops


# --- codec and speaker ---------------------------------------------------------
def decode_inputs(model, B, frames, gen, state_scale=0.1):
    cfg = model.cfg
    codes = torch.randint(0, cfg.codebook_size, (B, cfg.n_codebooks, frames), generator=gen)  # [B, K, F]
    states = [torch.randn(B, c, n, generator=gen) * state_scale for c, n in model.codec.decoder.state_shapes()]
    return [codes, *states]


def pcm_inputs(B, n, gen):
    return [torch.randn(B, n, generator=gen) * 0.3]


HOP = 1920
CASES = [
    # role, id, builder(model, gen) -> inputs
    ("codec_decode", "b1_f1_zero_state", lambda m, g: decode_inputs(m, 1, 1, g, state_scale=0.0)),
    ("codec_decode", "b3_f4_state", lambda m, g: decode_inputs(m, 3, 4, g)),
    ("codec_encode", "b1_3frames", lambda m, g: pcm_inputs(1, 3 * HOP, g)),
    ("codec_encode", "b3_partial_frame", lambda m, g: pcm_inputs(3, 2 * HOP + 111, g)),
    ("speaker_encode", "b1", lambda m, g: pcm_inputs(1, HOP, g)),
    ("speaker_encode", "b3", lambda m, g: pcm_inputs(3, 2 * HOP + 37, g)),
]


def run_torch(spec, inputs) -> dict:
    with torch.no_grad():
        out = spec.module(*inputs)
    out = (out,) if isinstance(out, torch.Tensor) else out
    assert len(out) == len(spec.outputs)
    return {t.name: o.numpy() for t, o in zip(spec.outputs, out)}


def run_onnx(ort_bundle, spec, inputs) -> dict:
    return ort_bundle.run(spec.role, {t.name: x for t, x in zip(spec.inputs, inputs)})


def assert_outputs_close(got: dict, ref: dict, where: str):
    assert set(got) == set(ref), where
    for name, r in ref.items():
        g = got[name]
        assert g.shape == r.shape, f"{where} {name}: shape {g.shape} != {r.shape}"
        assert g.dtype == r.dtype, f"{where} {name}: dtype {g.dtype} != {r.dtype}"
        tol = TOL.get(name, TOL_DEFAULT)
        if tol == 0:
            np.testing.assert_array_equal(g, r, err_msg=f"{where} {name}")
        else:
            err = float(np.abs(g - r).max()) if g.size else 0.0
            assert err <= tol, f"{where} {name}: max-abs error {err:.3g} > {tol}"


@pytest.mark.parametrize("role,build", [pytest.param(r, b, id=f"{r}-{i}") for r, i, b in CASES])
def test_onnx_matches_torch(role, build, tiny_model, tiny_specs, tiny_ort):
    spec = tiny_specs[role]
    inputs = build(tiny_model, torch.Generator().manual_seed(1234))
    assert_outputs_close(run_onnx(tiny_ort, spec, inputs), run_torch(spec, inputs), role)


def test_every_role_is_covered(tiny_specs):
    assert {r for r, _, _ in CASES} | {r for r, _, _ in STACK_CASES} == set(tiny_specs)


def test_codec_encode_cuts_to_whole_frames(tiny_specs, tiny_ort):
    spec = tiny_specs["codec_encode"]
    (pcm,) = pcm_inputs(2, 2 * HOP + 111, torch.Generator().manual_seed(5))
    out = run_onnx(tiny_ort, spec, [pcm])["codes"]
    assert out.shape == (2, 4, 2) and out.dtype == np.int64
    np.testing.assert_array_equal(out, run_onnx(tiny_ort, spec, [pcm[:, : 2 * HOP]])["codes"])


