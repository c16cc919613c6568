"""ONNX Runtime (CPU) against the PyTorch wrapper modules, graph by graph.

Each graph role of the tiny bundle is run on random inputs in ONNX Runtime
and compared with its `cadenza.export.graphs` wrapper module (the same
flat signature). Tolerances (max-abs): 1e-4 for logits, hidden states, K/V
and codec states; 1e-5 for PCM and the speaker embedding; codes exact.

Batched rows sit at different positions (different `start` / `lengths` /
`positions` / depth positions), and further tests check that each row's
result equals that row run alone and ignores cache entries past its valid
length.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cadenza.engine.contract import text as tok  # noqa: E402

TOL_DEFAULT = 1e-4  # logits, hidden, new K/V, codec states
TOL = {"pcm": 1e-5, "embedding": 1e-5, "codes": 0}
ISOLATION_TOL = 1e-5  # a row in a batch vs the same row alone
GARBAGE_TOL = 1e-6  # cache entries past the valid length must not matter


# --- input builders (tensors in the wrapper's positional order) -------------
def _cache(B, hkv, T, dh, n, gen):
    return [torch.randn(B, hkv, T, dh, generator=gen) for _ in range(n)]


def prefill_inputs(cfg, starts, lengths, P, T, gen):
    b = cfg.backbone
    B = len(starts)
    assert max(starts) <= T and max(lengths) <= P
    tokens = torch.randint(0, tok.N_BYTES, (B, P), generator=gen)  # [B, P]
    tokens[:, :2] = torch.tensor([tok.VOICE, tok.BOS])[:P]  # the prompt's first slots
    voice = torch.nn.functional.normalize(torch.randn(B, cfg.speaker_dim, generator=gen), dim=-1)
    return [tokens, voice, torch.tensor(lengths), torch.tensor(starts),
            *_cache(B, b.n_kv_heads, T, b.head_dim, 2 * b.n_layers, gen)]


def step_inputs(cfg, positions, T, gen):
    b = cfg.backbone
    B = len(positions)
    codes = torch.randint(0, cfg.codebook_size, (B, cfg.n_codebooks), generator=gen)  # [B, K]
    return [codes, torch.tensor(positions), *_cache(B, b.n_kv_heads, T, b.head_dim, 2 * b.n_layers, gen)]


def depth_inputs(cfg, B, depth_pos, gen):
    d = cfg.depth
    return [torch.randn(B, cfg.backbone.dim, generator=gen), torch.randint(0, cfg.codebook_size, (B,), generator=gen),
            torch.tensor([depth_pos]), *_cache(B, d.n_kv_heads, cfg.n_codebooks - 1, d.head_dim, 2 * d.n_layers, gen)]


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
    ("backbone_prefill", "b1", lambda m, g: prefill_inputs(m.cfg, [3], [8], 8, 10, g)),
    ("backbone_prefill", "b3_mixed_start_len", lambda m, g: prefill_inputs(m.cfg, [0, 4, 10], [8, 5, 1], 8, 10, g)),
    ("backbone_prefill", "b3_empty_cache", lambda m, g: prefill_inputs(m.cfg, [0, 0, 0], [6, 8, 3], 8, 0, g)),
    ("backbone_prefill", "b2_one_token", lambda m, g: prefill_inputs(m.cfg, [2, 9], [1, 1], 1, 10, g)),
    ("backbone_step", "b1", lambda m, g: step_inputs(m.cfg, [6], 10, g)),
    ("backbone_step", "b3_mixed_pos", lambda m, g: step_inputs(m.cfg, [0, 7, 10], 10, g)),
    ("backbone_step", "b1_empty_cache", lambda m, g: step_inputs(m.cfg, [0], 0, g)),
    ("depth_step", "b1_pos0", lambda m, g: depth_inputs(m.cfg, 1, 0, g)),
    ("depth_step", "b1_pos2", lambda m, g: depth_inputs(m.cfg, 1, 2, g)),
    ("depth_step", "b3_pos0", lambda m, g: depth_inputs(m.cfg, 3, 0, g)),
    ("depth_step", "b3_pos2", lambda m, g: depth_inputs(m.cfg, 3, 2, g)),
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
    assert {r for r, _, _ in CASES} == set(tiny_specs)


def test_codec_encode_cuts_to_whole_frames(tiny_specs, tiny_ort):
    spec = tiny_specs["codec_encode"]
    (pcm,) = pcm_inputs(2, 2 * HOP + 111, torch.Generator().manual_seed(5))
    out = run_onnx(tiny_ort, spec, [pcm])["codes"]
    assert out.shape == (2, 4, 2) and out.dtype == np.int64
    np.testing.assert_array_equal(out, run_onnx(tiny_ort, spec, [pcm[:, : 2 * HOP]])["codes"])


# --- batched rows are independent -------------------------------------------
def _row_alone_prefill(inputs, b):
    """Row `b` of a prefill batch as a batch of one: only its `lengths[b]` tokens, cache cut to `start[b]`."""
    tokens, voice, lengths, starts, *past = inputs
    n, s = int(lengths[b]), int(starts[b])
    return [tokens[b:b + 1, :n], voice[b:b + 1], lengths[b:b + 1], starts[b:b + 1],
            *[c[b:b + 1, :, :s] for c in past]], n


def _row_alone_step(inputs, b):
    codes, positions, *past = inputs
    s = int(positions[b])
    return [codes[b:b + 1], positions[b:b + 1], *[c[b:b + 1, :, :s] for c in past]], 1


ISOLATION = [
    ("backbone_prefill", lambda m, g: prefill_inputs(m.cfg, [0, 4, 10], [8, 5, 1], 8, 10, g), _row_alone_prefill),
    ("backbone_step", lambda m, g: step_inputs(m.cfg, [0, 7, 10], 10, g), _row_alone_step),
]


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("role,build,alone", [pytest.param(*c, id=c[0]) for c in ISOLATION])
def test_batched_rows_equal_rows_alone(role, build, alone, backend, tiny_model, tiny_specs, tiny_ort):
    """Row b of a batch (padded prompt, longer cache) equals row b run alone, within 1e-5."""
    spec = tiny_specs[role]
    run = (lambda x: run_onnx(tiny_ort, spec, x)) if backend == "onnx" else (lambda x: run_torch(spec, x))
    inputs = build(tiny_model, torch.Generator().manual_seed(7))
    batched = run(inputs)
    for b in range(inputs[0].shape[0]):
        single_in, n = alone(inputs, b)
        single = run(single_in)
        for name, ref in single.items():
            got = batched[name][b:b + 1]
            if name.startswith("new_"):
                got = got[:, :, :n]  # only the row's valid new entries
            err = float(np.abs(got - ref).max())
            assert err <= ISOLATION_TOL, f"{backend} {role} row {b} {name}: max-abs {err:.3g} > {ISOLATION_TOL}"


def _fill_past_valid(inputs, first_past: int, valid: list[int], value_fn):
    """Replace every cache entry at index >= valid[b] of row b with `value_fn(shape)`."""
    out = list(inputs)
    for i in range(first_past, len(out)):
        c = out[i].clone()
        for b, v in enumerate(valid):
            c[b, :, v:] = value_fn(c[b, :, v:].shape)
        out[i] = c
    return out


GARBAGE = [
    # role, builder, index of the first past tensor, valid length per row
    ("backbone_step", lambda m, g: step_inputs(m.cfg, [0, 5, 11], 12, g), 2, [0, 5, 11]),
    ("backbone_prefill", lambda m, g: prefill_inputs(m.cfg, [0, 3, 9], [8, 4, 2], 8, 12, g), 4, [0, 3, 9]),
    ("depth_step", lambda m, g: depth_inputs(m.cfg, 2, 0, g), 3, [0, 0]),
    ("depth_step", lambda m, g: depth_inputs(m.cfg, 2, 2, g), 3, [2, 2]),
]


@pytest.mark.parametrize("role,build,first,valid",
                         [pytest.param(*c, id=f"{c[0]}-valid{'_'.join(map(str, c[3]))}") for c in GARBAGE])
def test_cache_past_valid_length_is_ignored(role, build, first, valid, tiny_model, tiny_specs, tiny_ort):
    """Entries past each row's valid length (zeros vs large garbage) do not change any output (1e-6)."""
    spec = tiny_specs[role]
    g = torch.Generator().manual_seed(11)
    inputs = build(tiny_model, g)
    clean = _fill_past_valid(inputs, first, valid, lambda s: torch.zeros(s))
    garbage = _fill_past_valid(inputs, first, valid, lambda s: 1e4 + 1e3 * torch.randn(s, generator=g))
    a, b = run_onnx(tiny_ort, spec, clean), run_onnx(tiny_ort, spec, garbage)
    for name in a:
        err = float(np.abs(a[name] - b[name]).max())
        assert err <= GARBAGE_TOL, f"{role} {name}: garbage past the valid length moved the output by {err:.3g}"
