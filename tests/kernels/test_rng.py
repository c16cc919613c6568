"""Tests for cadenza.kernels.rng: the torch int64 hash against splitmix64 in plain Python ints."""

import pytest
import torch

from cadenza.kernels.rng import mix64, counter_uniform

MASK = (1 << 64) - 1


def py_mix64(z: int) -> int:
    """splitmix64 finaliser on unsigned Python ints (the published constants)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def py_uniform(seed: int, step: int) -> float:
    state = (py_mix64(seed & MASK) + (step + 1) * 0x9E3779B97F4A7C15) & MASK
    return (py_mix64(state) >> 40) / 2 ** 24


SEEDS = [0, 1, 2, 42, -1, -(2 ** 63), 2 ** 63 - 1, 123456789012345]
STEPS = [0, 1, 7, 1000, 2 ** 40]


def test_mix64_matches_unsigned_python():
    z = torch.tensor(SEEDS, dtype=torch.int64)
    want = [py_mix64(s & MASK) for s in SEEDS]
    assert [v & MASK for v in mix64(z).tolist()] == want


def test_known_splitmix64_output():
    # First output of the reference splitmix64 (Vigna's C code) seeded with 0.
    first = py_mix64((0 + 0x9E3779B97F4A7C15) & MASK)
    assert first == 0xE220A8397B1DCDAF


@pytest.mark.parametrize("step", STEPS)
def test_uniform_matches_python_ints(step):
    seed = torch.tensor(SEEDS, dtype=torch.int64)
    got = counter_uniform(seed, torch.full_like(seed, step))
    assert got.dtype == torch.float32
    assert got.tolist() == [py_uniform(s, step) for s in SEEDS]


def test_range_determinism_and_rough_uniformity():
    seed = torch.arange(20000, dtype=torch.int64) % 7
    step = torch.arange(20000, dtype=torch.int64)
    u = counter_uniform(seed, step)  # [20000]
    assert torch.equal(u, counter_uniform(seed.clone(), step.clone()))
    assert 0.0 <= u.min() and u.max() < 1.0
    counts = torch.histc(u, bins=10, min=0, max=1)
    chi2 = (((counts - 2000) ** 2) / 2000).sum().item()
    assert chi2 < 40, f"chi-square {chi2:.1f} over 10 bins (99.99th percentile is ~33)"
    assert len(set(u.tolist())) > 19900  # steps and seeds give different draws


def test_rejects_non_int64():
    with pytest.raises(TypeError, match="int64"):
        counter_uniform(torch.tensor([1], dtype=torch.int32), torch.tensor([0]))


def test_torch_and_numpy_generators_draw_the_same_bits():
    """The run time's numpy generator and this torch twin give identical float32 uniforms."""
    import numpy as np

    from cadenza.engine.runtime.rng import counter_uniform as np_uniform

    seeds = torch.tensor([s for s in SEEDS for _ in STEPS], dtype=torch.int64)
    steps = torch.tensor([t for _ in SEEDS for t in STEPS], dtype=torch.int64)
    np.testing.assert_array_equal(counter_uniform(seeds, steps).numpy(), np_uniform(seeds.numpy(), steps.numpy()))
