"""Tests for cadenza.kernels.pcm: conversion and crossfade references against numpy,
and the Triton kernels (interpreter on CPU) against the references."""

import math

import numpy as np
import pytest
import torch

from cadenza.kernels import pcm
from cadenza.kernels.pcm import crossfade, crossfade_reference, float_to_int16, float_to_int16_reference

TIES = (torch.arange(-20, 21, dtype=torch.float32) + 0.5) / 32767  # x * 32767 is exactly k + 0.5 in float32


def np_to_int16(x: np.ndarray) -> np.ndarray:
    """The conversion spec in numpy: NaN -> 0, clip, scale, round half to even."""
    return np.rint(np.clip(np.nan_to_num(x, nan=0.0), -1, 1) * np.float32(32767)).astype(np.int16)


def convert(impl, x: torch.Tensor) -> torch.Tensor:
    name, device = impl
    fn = pcm.float_to_int16_triton if name == "triton" else float_to_int16_reference
    return fn(x.to(device)).cpu()


def fade(impl, prev, head, **kw) -> torch.Tensor:
    name, device = impl
    fn = pcm.crossfade_triton if name == "triton" else crossfade_reference
    return fn(prev.to(device), head.to(device), **kw).cpu()


def test_ties_are_exact_in_float32():
    assert torch.equal(TIES * 32767, torch.arange(-20, 21, dtype=torch.float32) + 0.5)


def test_conversion_known_values(impl):
    x = torch.tensor([0.0, 1.0, -1.0, 2.0, -3.0, 0.5, 0.5 / 32767, 1.5 / 32767, -0.5 / 32767, -1.5 / 32767,
                      2.5 / 32767, float("nan"), float("inf"), -float("inf")])
    want = [0, 32767, -32767, 32767, -32767, 16384, 0, 2, 0, -2, 2, 0, 32767, -32767]
    got = convert(impl, x)
    assert got.dtype == torch.int16 and got.tolist() == want


def test_conversion_matches_numpy(impl):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(3000, generator=g) * 0.6, TIES, -TIES])  # [3082], some beyond +-1
    assert np.array_equal(convert(impl, x).numpy(), np_to_int16(x.numpy()))


def test_conversion_keeps_shape(impl):
    x = torch.rand(2, 3, 5) * 2 - 1
    assert convert(impl, x).shape == (2, 3, 5)


def np_weights(N: int, equal_power: bool):
    t = (np.arange(N) + 0.5) / N
    return (np.cos(t * np.pi / 2), np.sin(t * np.pi / 2)) if equal_power else (1 - t, t)


@pytest.mark.parametrize("equal_power", [False, True], ids=["linear", "equal-power"])
def test_crossfade_matches_numpy(impl, equal_power):
    g = torch.Generator().manual_seed(1)
    prev, head = torch.randn(3, 100, generator=g), torch.randn(3, 100, generator=g)  # [B, N]
    w_out, w_in = np_weights(100, equal_power)
    want = prev.double().numpy() * w_out + head.double().numpy() * w_in
    np.testing.assert_allclose(fade(impl, prev, head, equal_power=equal_power).numpy(), want, atol=1e-6)


def test_linear_crossfade_keeps_amplitude_and_equal_power_keeps_energy(impl):
    ones, zeros = torch.ones(1, 64), torch.zeros(1, 64)
    torch.testing.assert_close(fade(impl, ones, ones), ones)  # correlated signals: no dip
    out_, in_ = fade(impl, ones, zeros, equal_power=True), fade(impl, zeros, ones, equal_power=True)
    torch.testing.assert_close(out_ ** 2 + in_ ** 2, ones)  # uncorrelated signals: constant power
    torch.testing.assert_close(out_.flip(-1), in_)  # fade-in is the mirrored fade-out
    assert fade(impl, ones, zeros)[0, :3].tolist() == pytest.approx([1 - 0.5 / 64, 1 - 1.5 / 64, 1 - 2.5 / 64])


def test_crossfade_fused_int16_equals_two_steps():
    g = torch.Generator().manual_seed(2)
    prev, head = torch.randn(2, 500, generator=g), torch.randn(2, 500, generator=g)
    for ep in (False, True):
        fused = crossfade_reference(prev, head, equal_power=ep, to_int16=True)
        assert torch.equal(fused, float_to_int16(crossfade(prev, head, equal_power=ep)))


def test_crossfade_bad_shapes_raise():
    with pytest.raises(ValueError, match="same non-empty shape"):
        crossfade(torch.zeros(2, 10), torch.zeros(2, 11))
    with pytest.raises(ValueError, match="expected float audio"):
        crossfade(torch.zeros(2, 10, dtype=torch.int16), torch.zeros(2, 10, dtype=torch.int16))


@pytest.mark.parametrize("B, N", [(4, 1500), (1, 1), (3, 1024), (2, 7)])
def test_kernels_match_references(kernel_device, B, N):
    pcm.validate(B=B, N=N, device=kernel_device, seed=N)


def test_crossfade_kernel_on_3d_input(kernel_device):
    g = torch.Generator().manual_seed(3)
    prev, head = torch.randn(2, 3, 40, generator=g), torch.randn(2, 3, 40, generator=g)  # [B, C, N]
    got = pcm.crossfade_triton(prev.to(kernel_device), head.to(kernel_device), to_int16=True).cpu()
    diff = got.int() - crossfade_reference(prev, head, to_int16=True)
    assert got.shape == (2, 3, 40) and diff.abs().max() <= 1


def test_equal_power_weights_formula():
    w_out, w_in = pcm.crossfade_weights(8, equal_power=True)
    assert w_in[0].item() == pytest.approx(math.sin(math.pi / 2 * 0.5 / 8), rel=1e-6)
    torch.testing.assert_close(w_out ** 2 + w_in ** 2, torch.ones(8))
