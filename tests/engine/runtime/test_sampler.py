"""The sampler: greedy, top-k, top-p, the inverse-CDF pick, repetition penalty, counter-based draws.

`scalar_pick` below states the rules of `cadenza.engine.runtime.sampler` one step at a
time for one row; the vectorised sampler, and the torch kernels' reference, must agree with it.
"""
from __future__ import annotations

import numpy as np
import pytest

from cadenza.engine.errors import SamplingError
from cadenza.engine.runtime.rng import counter_uniform
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler, sample_batch


def pick(ws: np.ndarray, order: np.ndarray, top_k: int, top_p: float, u: float) -> int:
    """Steps 4-7 for one row, from weights sorted descending (`order` maps back to ids)."""
    c = np.cumsum(ws)
    n = len(ws) if top_k <= 0 else min(top_k, len(ws))
    if top_p < 1.0:
        n = min(n, int((c[:n] < top_p * c[n - 1]).sum()) + 1)
    n = max(1, min(n, int((ws > 0).sum())))
    return int(order[min(int((c[:n] <= u * c[n - 1]).sum()), n - 1)])


def scalar_pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, u: float) -> int:
    z = logits.astype(np.float64) / temperature
    w = np.exp(z - z.max())
    order = np.argsort(-w, kind="stable")
    return pick(w[order], order, top_k, top_p, u)


def _sampler(k: int = 1, **kwargs) -> StreamSampler:
    kwargs.setdefault("seed", 0)
    return StreamSampler(SamplingParams(**kwargs), k)


def _random_logits(rng, n=65):
    return (rng.standard_normal(n) * 3).astype(np.float32)


def test_greedy_is_argmax():
    rng = np.random.default_rng(0)
    for params in (dict(greedy=True), dict(temperature=0.0)):
        s = _sampler(**params)
        assert s.params.is_greedy
        for _ in range(50):
            logits = _random_logits(rng)
            assert s.sample(logits, 0) == int(np.argmax(logits))


def test_greedy_ties_pick_the_lowest_index():
    assert _sampler(greedy=True).sample(np.array([0.0, 2.0, 2.0, 1.0], np.float32), 0) == 1


def test_draws_depend_on_seed_and_counter_only():
    s = _sampler(k=3, greedy=True, seed=3)
    assert s.uniform(1) == counter_uniform(3, 1)
    s.end_frame(np.array([1, 2, 3]))  # every frame advances the counter by K, greedy or not
    s.end_frame(None)  # an end of speech too
    assert s.draws == 6 and s.uniform(2) == counter_uniform(3, 8)


@pytest.mark.parametrize("params", [pytest.param(dict(top_k=1, temperature=1.5), id="top_k=1"),
                                    pytest.param(dict(top_k=0, top_p=1e-9, temperature=1.5), id="tiny-top_p")])
def test_degenerate_sampling_is_greedy(params):
    rng = np.random.default_rng(1)
    for seed in range(5):
        s = _sampler(seed=seed, **params)
        for _ in range(40):
            logits = _random_logits(rng)
            assert s.sample(logits, 0) == int(np.argmax(logits))


PROBS = np.array([0.5, 0.3, 0.2])
ORDER = np.array([2, 0, 1])  # sorted position -> id


@pytest.mark.parametrize("top_k, top_p, u, want", [
    # cumulative [0.5, 0.8, 1.0]: u in [0, .5) -> id 2, [.5, .8) -> id 0, [.8, 1) -> id 1
    (0, 1.0, 0.0, 2), (0, 1.0, 0.49, 2), (0, 1.0, 0.5, 0), (0, 1.0, 0.79, 0), (0, 1.0, 0.85, 1), (0, 1.0, 0.999, 1),
    # top-k 2 renormalises to [0.625, 1.0]
    (2, 1.0, 0.6, 2), (2, 1.0, 0.7, 0), (2, 1.0, 0.999, 0),
    (1, 1.0, 0.999, 2), (5, 1.0, 0.85, 1),  # k beyond the vocabulary: all kept
    # top-p: the smallest prefix whose mass reaches top_p
    (0, 0.5, 0.999, 2), (0, 0.6, 0.5, 2), (0, 0.6, 0.7, 0), (0, 0.81, 0.9, 1),
    # top-p applies to the renormalised top-k mass: [0.625, 1.0] reaches 0.6 at the first
    (2, 0.6, 0.999, 2), (2, 0.7, 0.7, 0),
])
def test_pick_hand_computed(top_k, top_p, u, want):
    assert pick(PROBS.copy(), ORDER, top_k, top_p, u) == want
    logits = np.log(PROBS[np.argsort(ORDER)])  # the same distribution as logits over ids 0..2
    assert scalar_pick(logits, 1.0, top_k, top_p, u) == want


def test_pick_renormalises_unnormalised_mass():
    probs = np.array([2.0, 1.0, 1.0])  # -> [0.5, 0.25, 0.25], cumulative [0.5, 0.75, 1.0]
    order = np.array([7, 8, 9])
    assert [pick(probs.copy(), order, 0, 1.0, u) for u in (0.1, 0.6, 0.74, 0.76)] == [7, 8, 8, 9]


def _draw(s: StreamSampler, logits: np.ndarray, codebook: int = 0) -> int:
    """One frame's draw, then the frame ends (the counter moves on)."""
    x = s.sample(logits, codebook)
    s.end_frame(None)
    return x


def test_sampling_follows_the_distribution():
    p = np.array([0.6, 0.25, 0.1, 0.05])
    s = _sampler(temperature=1.0, top_k=0, seed=11)
    draws = np.array([_draw(s, np.log(p).astype(np.float32)) for _ in range(4000)])
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, p, atol=0.03)


def test_top_k_and_top_p_restrict_the_support():
    logits = np.log(np.array([0.05, 0.5, 0.1, 0.3, 0.05])).astype(np.float32)
    s = _sampler(temperature=1.0, top_k=2, seed=2)
    assert set(_draw(s, logits) for _ in range(300)) == {1, 3}
    s = _sampler(temperature=1.0, top_k=0, top_p=0.85, seed=2)  # 0.5 + 0.3 = 0.8 < 0.85: needs the 0.1 too
    assert set(_draw(s, logits) for _ in range(500)) == {1, 3, 2}


def test_temperature_sharpens():
    logits = np.log(np.array([0.4, 0.35, 0.25])).astype(np.float32)
    hot = _sampler(temperature=2.0, top_k=0, seed=4)
    cold = _sampler(temperature=0.1, top_k=0, seed=4)
    n = 1000
    assert sum(_draw(cold, logits) == 0 for _ in range(n)) > sum(_draw(hot, logits) == 0 for _ in range(n))


def test_repetition_penalty_divides_positive_logits_within_the_window():
    s = _sampler(greedy=True, repetition_penalty=2.0, repetition_window=2)
    logits = np.array([1.0, 3.0, 2.0, -1.0], np.float32)
    before = logits.copy()
    assert s.sample(logits, 0) == 1
    s.end_frame(np.array([1]))  # 3.0 -> 1.5: code 2 wins
    assert s.sample(logits, 0) == 2
    np.testing.assert_array_equal(logits, before)  # the caller's logits are not modified
    s.end_frame(np.array([2]))  # history [2, 1]: 3.0 -> 1.5, 2.0 -> 1.0
    assert s.sample(logits, 0) == 1
    s.end_frame(np.array([3]))  # history [3, 2]: code 1 left the window
    assert s.sample(logits, 0) == 1
    s.end_frame(np.array([1]))
    assert s.sample(logits, 0) == 2


def test_repetition_penalty_multiplies_negative_logits():
    s = _sampler(greedy=True, repetition_penalty=2.0)
    logits = np.array([-1.0, -0.6, -3.0], np.float32)
    s.end_frame(np.array([1]))  # -0.6 -> -1.2: code 0 (-1.0) wins
    assert s.sample(logits, 0) == 0


def test_repetition_history_is_per_codebook():
    s = _sampler(k=2, greedy=True, repetition_penalty=10.0)
    logits = np.array([1.0, 2.0, 0.5], np.float32)
    s.end_frame(np.array([1, 0]))  # codebook 0 saw code 1, codebook 1 saw code 0
    assert s.sample(logits, 0) == 0
    assert s.sample(logits, 1) == 1


def test_no_penalty_when_off():
    for params in (dict(repetition_penalty=1.0), dict(repetition_penalty=3.0, repetition_window=0)):
        s = _sampler(greedy=True, **params)
        s.end_frame(np.array([1]))
        assert s.sample(np.array([1.0, 2.0, 0.5], np.float32), 0) == 1


def test_per_stream_draws_are_deterministic_and_independent():
    rng = np.random.default_rng(5)
    logits = [_random_logits(rng) for _ in range(60)]
    a = _sampler(temperature=1.0, top_k=10, seed=42)
    want = [_draw(a, l) for l in logits]
    b, other = _sampler(temperature=1.0, top_k=10, seed=42), _sampler(temperature=1.0, top_k=10, seed=7)
    got = []
    for l in logits:  # interleaved with another stream's draws: no effect
        _draw(other, l)
        got.append(_draw(b, l))
        _draw(other, l)
    assert got == want
    c = _sampler(temperature=1.0, top_k=10, seed=43)
    assert [_draw(c, l) for l in logits] != want


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.01), dict(top_k=-1),
                                 dict(top_k=2.5), dict(repetition_penalty=0.5), dict(repetition_window=-1),
                                 dict(seed=-3), dict(seed="x")])
def test_invalid_params(bad):
    with pytest.raises(SamplingError):
        SamplingParams(**bad)


def test_params_defaults():
    p = SamplingParams(greedy=True)
    assert p.temperature == 0 and p.is_greedy
    q = SamplingParams()
    assert isinstance(q.seed, int) and q.seed >= 0 and not q.is_greedy


@pytest.mark.parametrize("top_k,top_p,temperature", [(0, 1.0, 1.0), (5, 1.0, 0.7), (0, 0.8, 1.3), (20, 0.5, 0.9)])
def test_batched_sampling_equals_the_scalar_rules(top_k, top_p, temperature):
    """sample_batch (vectorised) picks what the scalar statement of the rules picks, row by row,
    with each stream's counter-based draw, and a row's pick does not depend on its batch neighbours."""
    rs = np.random.RandomState(0)
    logits = (rs.randn(6, 64) * 3).astype(np.float32)
    logits[:, 5] = -np.inf  # a banned id (an end of speech before the minimum) is never picked
    mk = lambda seed: StreamSampler(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed), 2)
    for k in (0, 1):
        batched = sample_batch(logits, [mk(s) for s in range(6)], k)
        for b in range(6):
            u = float(counter_uniform(b, k))
            assert batched[b] == scalar_pick(logits[b], temperature, top_k, top_p, u) != 5
            assert batched[b] == sample_batch(logits[b:b + 1], [mk(b)], k)[0]


@pytest.mark.parametrize("top_k,top_p,temperature", [(0, 1.0, 1.0), (50, 1.0, 0.8), (0, 0.9, 1.1), (7, 0.6, 0.5)])
def test_numpy_sampler_equals_the_torch_kernel_reference(top_k, top_p, temperature):
    """The torch backend samples with `cadenza.kernels.sampling`: same rules, same draws, same ids."""
    torch = pytest.importorskip("torch")
    from cadenza.kernels.rng import counter_uniform as torch_uniform
    from cadenza.kernels.sampling import sample_reference

    rs = np.random.RandomState(1)
    logits = (rs.randn(32, 1025) * 2).astype(np.float32)
    seeds = np.arange(32) * 7919
    samplers = [StreamSampler(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=int(s)), 8)
                for s in seeds]
    want = sample_batch(logits, samplers, 3)
    B = len(seeds)
    u = torch_uniform(torch.as_tensor(seeds), torch.full((B,), 3))
    got = sample_reference(torch.as_tensor(logits), torch.full((B,), temperature), torch.full((B,), top_k),
                           torch.full((B,), top_p), u)
    np.testing.assert_array_equal(got.numpy(), want)


def test_partial_descending_order_equals_the_stable_sort():
    """The top-k shortcut (partition, then sort the k) orders like a full stable descending sort,
    ties included (a tie across the cut falls back to the full sort)."""
    from cadenza.engine.runtime.sampler import _descending

    rs = np.random.RandomState(0)
    for trial in range(100):
        w = np.exp(rs.randn(4, 300) * 2)
        if trial % 3 == 0:
            w[:, rs.randint(0, 300, 50)] = 0.5  # many equal weights
        m = int(rs.randint(1, 60))
        np.testing.assert_array_equal(_descending(w, m)[:, :m], np.argsort(-w, axis=1, kind="stable")[:, :m])


def test_uniform_is_the_counter_draw_in_any_order_and_across_frames():
    """A frame's draws are computed together once; asked in any order, after end_frame, or past K,
    each is still counter_uniform(seed, draws + codebook)."""
    s = StreamSampler(SamplingParams(seed=11), 4)
    for frame in range(3):
        for k in (3, 0, 2, 0, 1, 5):
            assert s.uniform(k) == float(counter_uniform(11, 4 * frame + k)), (frame, k)
        s.end_frame(np.array([1, 2, 3, 4]) if frame else None)
