"""Tests for cadenza.kernels.sampling: reference against hand-computed and numpy
expectations, and the Triton kernel (interpreter on CPU) against the reference."""

import math

import numpy as np
import pytest
import torch

from cadenza.kernels import sampling
from cadenza.kernels.sampling import sample, sample_reference

U_MAX = 1 - 2 ** -24  # largest uniform counter_uniform produces


def np_sample_row(logits, temperature, top_k, top_p, u) -> int:
    """The sampling spec for one row, in plain numpy (what the CPU runtime implements)."""
    x = np.asarray(logits, dtype=np.float32)
    if temperature <= 0:
        return int(np.argmax(x))
    x = x / np.float32(temperature)
    w = np.exp(x - x.max())  # [V]
    order = np.argsort(-w, kind="stable")  # descending, ties: lower index first
    ws = w[order]
    c = np.cumsum(ws, dtype=np.float32)
    n = len(w) if top_k <= 0 else min(top_k, len(w))
    if top_p < 1:
        n = min(n, int(np.sum(c[:n] < np.float32(top_p) * c[n - 1])) + 1)
    n = max(min(n, int(np.sum(ws > 0))), 1)
    pick = min(int(np.sum(c[:n] <= np.float32(u) * c[n - 1])), n - 1)
    return int(order[pick])


def run(impl, logits, temperature=1.0, top_k=0, top_p=1.0, uniform=0.5):
    """Sample with ``impl`` (reference or triton); scalars broadcast over the batch."""
    name, device = impl
    logits = torch.as_tensor(logits, dtype=torch.float32)
    logits = logits[None] if logits.dim() == 1 else logits  # [B, V]
    B = logits.shape[0]

    def col(v, dtype):
        return torch.as_tensor(v, dtype=dtype).expand(B).contiguous().to(device)

    args = (logits.to(device), col(temperature, torch.float32), col(top_k, torch.int32),
            col(top_p, torch.float32), col(uniform, torch.float32))
    fn = sampling.sample_triton if name == "triton" else sample_reference
    return fn(*args).cpu().tolist()


# Probabilities [0.1, 0.4, 0.2, 0.3]: sorted ids 1, 3, 2, 0 with cumulative mass .4, .7, .9, 1.
HAND_P = [0.1, 0.4, 0.2, 0.3]
HAND_CASES = [
    pytest.param(0, 1.0, 0.05, 1, id="plain-first"),
    pytest.param(0, 1.0, 0.5, 3, id="plain-second"),
    pytest.param(0, 1.0, 0.75, 2, id="plain-third"),
    pytest.param(0, 1.0, 0.95, 0, id="plain-last"),
    pytest.param(0, 0.6, 0.5, 1, id="top_p-keeps-two-renormalised"),  # kept {1, 3}: .4/.7 = .571 > .5
    pytest.param(0, 0.6, 0.6, 3, id="top_p-keeps-two-second"),
    pytest.param(0, 0.75, 0.99, 2, id="top_p-keeps-three"),  # .7 < .75, so three tokens
    pytest.param(3, 0.75, 0.99, 3, id="top_p-on-renormalised-top_k"),  # .7 / .9 >= .75: two tokens
    pytest.param(2, 1.0, 0.99, 3, id="top_k-two"),
    pytest.param(1, 1.0, 0.99, 1, id="top_k-one"),
]


@pytest.mark.parametrize("top_k, top_p, u, expected", HAND_CASES)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_handcrafted_distribution(impl, temperature, top_k, top_p, u, expected):
    logits = [math.log(p) * temperature for p in HAND_P]  # softmax(logits / T) == HAND_P
    assert run(impl, logits, temperature, top_k, top_p, u) == [expected]


def test_greedy_picks_argmax_lowest_index_on_ties(impl):
    logits = [[1.0, 5.0, 5.0, 2.0], [-3.0, -1.0, -2.0, -1.0], [0.0, 0.0, 0.0, 0.0]]
    assert run(impl, logits, temperature=0.0, uniform=0.99) == [1, 1, 0]
    assert run(impl, logits, temperature=-1.0, top_k=2, top_p=0.1) == [1, 1, 0]


def test_equal_probabilities_are_ordered_by_index(impl):
    logits = [0.0] * 4  # cumulative .25, .5, .75, 1 in index order
    assert [run(impl, logits, uniform=u)[0] for u in (0.1, 0.3, 0.6, 0.9)] == [0, 1, 2, 3]
    # On a boundary the draw goes to the later token: pick = count(c <= u * total).
    assert [run(impl, logits, uniform=u)[0] for u in (0.0, 0.25, 0.5, 0.75)] == [0, 1, 2, 3]


def test_masked_tokens_are_never_drawn(impl):
    logits = [0.0, -math.inf, 0.0, -math.inf, -200.0]  # exp(-200) underflows to 0 in float32
    assert run(impl, logits, uniform=U_MAX) == [2]
    assert run(impl, logits, uniform=0.0) == [0]
    assert run(impl, logits, uniform=1.0) == [2]  # u = 1 is out of range, yet must not reach w == 0
    assert run(impl, logits, top_k=4, uniform=1.0) == [2]


def random_batch(B=8, V=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, generator=g) * 3, torch.rand(B, generator=g)  # [B, V], [B]


def test_top_k_one_and_tiny_top_p_equal_greedy(impl):
    logits, u = random_batch()
    greedy = logits.argmax(1).tolist()
    assert run(impl, logits, temperature=0.8, top_k=1, uniform=u) == greedy
    assert run(impl, logits, temperature=0.8, top_p=1e-6, uniform=u) == greedy
    assert run(impl, logits, temperature=0.8, top_p=0.0, uniform=u) == greedy
    assert run(impl, logits, temperature=0.8, uniform=torch.zeros(8)) == greedy


@pytest.mark.parametrize("k", [1, 5, 20])  # the k-th token must hold > 2**-24 of the mass
def test_uniform_near_one_picks_last_kept_token(impl, k):
    logits, _ = random_batch()
    kth = torch.argsort(logits, dim=1, descending=True, stable=True)[:, k - 1]  # [B]
    assert run(impl, logits, temperature=1.0, top_k=k, uniform=U_MAX) == kth.tolist()


def test_inverse_cdf_frequencies_match_probabilities():
    p = torch.tensor([0.05, 0.5, 0.15, 0.3])
    M = 1000
    u = (torch.arange(M) + 0.5) / M  # [M], a uniform grid makes the counts deterministic
    ids = sample_reference(p.log().expand(M, 4), torch.ones(M), torch.zeros(M, dtype=torch.int32),
                           torch.ones(M), u)
    counts = torch.bincount(ids, minlength=4).float()
    assert torch.allclose(counts, p * M, atol=1.0), counts


@pytest.mark.parametrize("seed", range(4))
def test_reference_matches_numpy_spec(seed):
    args = sampling.random_inputs(B=64, V=97 if seed % 2 else 500, dtype=torch.float32, device="cpu", seed=seed)
    want = [np_sample_row(*(a[b].numpy() for a in args)) for b in range(64)]
    assert sample_reference(*args).tolist() == want


def test_bfloat16_logits_match_float32_of_same_values(impl):
    args = list(sampling.random_inputs(B=16, V=64, dtype=torch.bfloat16, device="cpu", seed=5))
    want = sample_reference(args[0].float(), *args[1:])
    name, device = impl
    fn = sampling.sample_triton if name == "triton" else sample_reference
    assert fn(*(a.to(device) for a in args)).cpu().tolist() == want.tolist()


def test_dispatch_on_cpu_uses_reference():
    args = sampling.random_inputs(B=8, V=50, dtype=torch.float32, device="cpu", seed=1)
    assert torch.equal(sample(*args), sample_reference(*args))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="top_k must have shape"):
        sample(torch.zeros(2, 5), torch.ones(2), torch.zeros(3, dtype=torch.int32), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"logits must be \[B, V\]"):
        sample(torch.zeros(5), torch.ones(1), torch.zeros(1, dtype=torch.int32), torch.ones(1), torch.ones(1))


@pytest.mark.parametrize("B, V, dtype", [
    pytest.param(16, 1000, torch.float32, id="fp32-1000"),
    pytest.param(16, 1000, torch.bfloat16, id="bf16-1000"),
    pytest.param(16, 37, torch.float32, id="fp32-37"),
    pytest.param(8, 1, torch.float32, id="V1"),
    pytest.param(4, 4096, torch.float32, id="fp32-4096"),
])
def test_kernel_matches_reference_exactly(kernel_device, B, V, dtype):
    args = sampling.random_inputs(B, V, dtype, "cpu", seed=B + V)
    got = sampling.sample_triton(*(a.to(kernel_device) for a in args)).cpu()
    assert torch.equal(got, sample_reference(*args))


def test_validate_passes(kernel_device):
    sampling.validate(B=16, V=257, device=kernel_device)


def test_validate_catches_a_wrong_kernel(kernel_device, monkeypatch):
    real = sampling.sample_triton
    monkeypatch.setattr(sampling, "sample_triton", lambda *a: (real(*a) + 1) % a[0].shape[1])
    with pytest.raises(AssertionError, match="kernel != reference"):
        sampling.validate(B=8, V=64, device=kernel_device)
