"""Tests for cadenza.kernels.kv_scatter: the reference against an element-wise numpy loop,
range errors, and the Triton kernel (interpreter on CPU) against the reference."""

import numpy as np
import pytest
import torch

from cadenza.kernels import kv_scatter as kvs
from cadenza.kernels.kv_scatter import kv_scatter, kv_scatter_reference


def np_scatter(cache: np.ndarray, new: np.ndarray, slots, starts, lengths) -> np.ndarray:
    """Expected cache, one element at a time."""
    out = cache.copy()
    L, two, H, D = cache.shape[1], cache.shape[2], cache.shape[3], cache.shape[5]
    for b, (slot, start, length) in enumerate(zip(slots, starts, lengths)):
        for l, k, h, t, d in np.ndindex(L, two, H, length, D):
            out[slot, l, k, h, start + t, d] = new[b, l, k, h, t, d]
    return out


def test_reference_matches_numpy_loop():
    cache, new, slots, starts, lengths = kvs.random_inputs(S=5, L=2, H=3, T=12, D=4, B=3, n=4, seed=1)
    want = np_scatter(cache.numpy(), new.numpy(), slots.tolist(), starts.tolist(), lengths.tolist())
    got = kv_scatter_reference(cache.clone(), new, slots, starts, lengths)
    assert np.array_equal(got.numpy(), want)
    assert lengths.tolist() != [4, 4, 4], "the seed should give ragged lengths"


def test_writes_in_place_and_leaves_the_rest():
    cache = torch.zeros(3, 1, 2, 1, 8, 2)  # [S, L, 2, H, T, D]
    new = torch.ones(2, 1, 2, 1, 3, 2)  # [B, L, 2, H, n, D]
    out = kv_scatter(cache, new, torch.tensor([2, 0]), torch.tensor([5, 0]), torch.tensor([3, 1]))
    assert out is cache
    assert cache[2, ..., 5:8, :].eq(1).all() and cache[2, ..., :5, :].eq(0).all()
    assert cache[0, ..., 0:1, :].eq(1).all() and cache[0, ..., 1:, :].eq(0).all()
    assert cache[1].eq(0).all()


def test_lengths_none_writes_all_and_zero_writes_nothing():
    cache = torch.zeros(2, 1, 2, 1, 4, 1)
    new = torch.full((2, 1, 2, 1, 2, 1), 7.0)
    kv_scatter(cache, new, torch.tensor([0, 1]), torch.tensor([1, 2]))
    assert cache[0, 0, 0, 0, :, 0].tolist() == [0, 7, 7, 0] and cache[1, 0, 1, 0, :, 0].tolist() == [0, 0, 7, 7]
    before = cache.clone()
    kv_scatter(cache, new * 0 + 9, torch.tensor([0, 1]), torch.tensor([4, 0]), torch.tensor([0, 0]))
    assert torch.equal(cache, before)


BAD = [
    pytest.param([3, 0], [0, 0], [1, 1], r"slots\[0\]=3 is outside", id="slot-too-big"),
    pytest.param([-1, 0], [0, 0], [1, 1], r"slots\[0\]=-1 is outside", id="slot-negative"),
    pytest.param([0, 1], [0, -1], [1, 1], r"row 1 writes positions \[-1, 0\)", id="start-negative"),
    pytest.param([0, 1], [0, 7], [1, 2], r"row 1 writes positions \[7, 9\) of slot 1, outside", id="past-end"),
    pytest.param([0, 1], [0, 0], [1, 3], r"lengths\[1\]=3 is outside \[0, 2\]", id="length-too-big"),
    pytest.param([1, 1], [0, 4], [1, 1], r"rows 0 and 1 both write slot 1", id="duplicate-slot"),
]


@pytest.mark.parametrize("slots, starts, lengths, message", BAD)
def test_bad_ranges_raise_clear_errors(slots, starts, lengths, message):
    cache, new = torch.zeros(3, 1, 2, 1, 8, 2), torch.ones(2, 1, 2, 1, 2, 2)
    with pytest.raises(ValueError, match=message):
        kv_scatter(cache, new, torch.tensor(slots), torch.tensor(starts), torch.tensor(lengths))
    assert cache.eq(0).all(), "nothing may be written when the check fails"


def test_bad_shapes_raise():
    cache = torch.zeros(3, 1, 2, 1, 8, 2)
    with pytest.raises(ValueError, match="does not fit cache"):
        kv_scatter(cache, torch.ones(1, 1, 2, 2, 1, 2), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"convert new with \.to\(cache\)"):
        kv_scatter(cache, torch.ones(1, 1, 2, 1, 1, 2, dtype=torch.float64), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="slots must be int64"):
        kv_scatter(cache, torch.ones(1, 1, 2, 1, 1, 2), torch.tensor([0], dtype=torch.int32), torch.tensor([0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("sizes", [
    pytest.param({}, id="default"),
    pytest.param({"S": 3, "B": 3, "n": 40, "T": 64, "D": 8}, id="prefill-multi-block"),
    pytest.param({"S": 4, "B": 1, "n": 1, "T": 5, "D": 3, "L": 1, "H": 1}, id="decode-odd-sizes"),
])
def test_kernel_matches_reference(kernel_device, dtype, sizes):
    kvs.validate(dtype=dtype, device=kernel_device, seed=len(sizes), **sizes)


def test_kernel_writes_only_its_ranges(kernel_device):
    cache = torch.zeros(4, 2, 2, 2, 16, 8, device=kernel_device)  # [S, L, 2, H, T, D]
    new = torch.randn(2, 2, 2, 2, 5, 8, device=kernel_device)  # [B, L, 2, H, n, D]
    args = (new, torch.tensor([3, 1]), torch.tensor([11, 0]), torch.tensor([5, 2]))
    got = kvs.kv_scatter_triton(cache, *(a.to(kernel_device) for a in args))
    assert torch.equal(got.cpu(), kv_scatter_reference(torch.zeros(4, 2, 2, 2, 16, 8), new.cpu(), *args[1:]))
    assert got[0].eq(0).all() and got[2].eq(0).all()


def test_kernel_rejects_non_contiguous_cache(kernel_device):
    cache = torch.zeros(2, 1, 2, 1, 8, 8, device=kernel_device)[..., :4]  # [S, L, 2, H, T, 4], a strided view
    with pytest.raises(ValueError, match="must be contiguous"):
        kvs.kv_scatter_triton(cache, torch.ones(1, 1, 2, 1, 1, 4, device=kernel_device),
                              torch.tensor([0], device=kernel_device), torch.tensor([0], device=kernel_device))
