"""`KVCache` index arithmetic: every write lands exactly where documented and never in another slot.

(Whether a write fits a slot is the row table's check: tests/engine/runtime/test_generator.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from cadenza.engine.errors import KVCacheExhausted
from cadenza.engine.runtime.kv_cache import CacheShape, KVCache

L, H, T, D, S = 2, 2, 8, 3, 3
SHAPE = CacheShape(layers=L, kv_heads=H, head_dim=D, max_len=T)


@pytest.fixture
def cache():
    c = KVCache(SHAPE, S)
    c.data[...] = np.random.default_rng(0).standard_normal(c.data.shape)  # stale content everywhere
    return c


def _others_unchanged(cache, before, slot):
    for s in range(S):
        if s != slot:
            np.testing.assert_array_equal(cache.data[:, :, s], before[:, :, s], err_msg=f"slot {s} changed")


def test_layout_and_size():
    c = KVCache(SHAPE, S)
    assert c.data.shape == (L, 2, S, H, T, D) and c.data.dtype == np.float32
    assert SHAPE.slot_bytes() == L * 2 * H * T * D * 4
    assert SHAPE.slot_bytes(2) == L * 2 * H * T * D * 2  # bf16 caches (torch-cuda)
    assert c.nbytes == S * SHAPE.slot_bytes()


def test_views_are_zero_copy_and_contiguous(cache):
    views = cache.views(2)
    assert len(views) == 2 * L
    for i, v in enumerate(views):
        l, kv = divmod(i, 2)
        assert v.shape == (2, H, T, D) and v.flags.c_contiguous
        assert np.shares_memory(v, cache.data)
        np.testing.assert_array_equal(v, cache.data[l, kv, :2])
    one = cache.views(1, start=2)  # one slot, further in: still a contiguous view (a fused graph writes into it)
    assert all(v.shape == (1, H, T, D) and v.flags.c_contiguous for v in one)
    one[3][0, 1, 4, 2] = 123.0  # layer 1, value
    assert cache.data[1, 1, 2, 1, 4, 2] == 123.0
    two = cache.views(2, start=1)
    assert two[0].shape == (2, H, T, D) and np.shares_memory(two[0], cache.data[0, 0, 1:3])


def _per_layer(new: np.ndarray) -> list[np.ndarray]:
    """[L, 2, B, H, 1, D] -> the step graph's outputs: per layer key then value, [B, H, 1, D] each."""
    return [new[l, kv] for l in range(new.shape[0]) for kv in (0, 1)]


def test_write_rows(cache):
    before = cache.data.copy()
    new = np.random.default_rng(1).standard_normal((L, 2, S, H, 1, D)).astype(np.float32)
    cache.write_rows(_per_layer(new), 2, np.array([3, 5]))
    expected = before.copy()
    expected[:, :, 0, :, 3, :] = new[:, :, 0, :, 0, :]
    expected[:, :, 1, :, 5, :] = new[:, :, 1, :, 0, :]
    np.testing.assert_array_equal(cache.data, expected)  # slot 2 (beyond the batch) and every other position kept


def test_write_rows_same_position_different_rows(cache):
    new = np.random.default_rng(2).standard_normal((L, 2, 3, H, 1, D)).astype(np.float32)
    cache.write_rows(_per_layer(new), 3, np.array([0, 0, 7]))
    for b, p in enumerate((0, 0, 7)):
        np.testing.assert_array_equal(cache.data[:, :, b, :, p, :], new[:, :, b, :, 0, :])


def test_write_rows_from_a_slot_offset(cache):
    new = np.random.default_rng(6).standard_normal((L, 2, 2, H, 1, D)).astype(np.float32)
    before = cache.data.copy()
    cache.write_rows(_per_layer(new), 2, np.array([1, 6]), start=1)  # rows 0, 1 -> slots 1, 2
    np.testing.assert_array_equal(cache.data[:, :, 1, :, 1], new[:, :, 0, :, 0])
    np.testing.assert_array_equal(cache.data[:, :, 2, :, 6], new[:, :, 1, :, 0])
    np.testing.assert_array_equal(cache.data[:, :, 0], before[:, :, 0])


def test_write_span(cache):
    before = cache.data.copy()
    new = np.random.default_rng(3).standard_normal((L, 2, 2, H, 5, D)).astype(np.float32)
    cache.write_span(_per_layer(new), 1, 1, 2, 3)  # row 1 of the call, only the first n=3 of its 5 positions
    np.testing.assert_array_equal(cache.data[:, :, 1, :, 2:5], new[:, :, 1, :, :3])
    np.testing.assert_array_equal(cache.data[:, :, 1, :, :2], before[:, :, 1, :, :2])
    np.testing.assert_array_equal(cache.data[:, :, 1, :, 5:], before[:, :, 1, :, 5:])
    _others_unchanged(cache, before, 1)


def test_move(cache):
    before = cache.data.copy()
    cache.move(2, 0, 4)
    np.testing.assert_array_equal(cache.data[:, :, 0, :, :4], before[:, :, 2, :, :4])
    np.testing.assert_array_equal(cache.data[:, :, 0, :, 4:], before[:, :, 0, :, 4:])  # beyond n: untouched
    np.testing.assert_array_equal(cache.data[:, :, 1:], before[:, :, 1:])  # source and others untouched


def test_move_noops(cache):
    before = cache.data.copy()
    cache.move(1, 1, T)
    cache.move(2, 0, 0)
    np.testing.assert_array_equal(cache.data, before)


def test_prefix_copy_and_read(cache):
    before = cache.data.copy()
    src = np.random.default_rng(4).standard_normal((L, 2, H, 3, D)).astype(np.float32)
    cache.copy_prefix(src, 2, 3)
    got = cache.read_prefix(2, 3)
    np.testing.assert_array_equal(got, src)
    got[...] = 0  # a copy, not a view
    np.testing.assert_array_equal(cache.data[:, :, 2, :, :3], src)
    _others_unchanged(cache, before, 2)


def test_random_writes_never_touch_other_slots(cache):
    rng = np.random.default_rng(5)
    for _ in range(30):
        slot = int(rng.integers(S))
        before = cache.data.copy()
        op = rng.integers(3)
        if op == 0:
            n = int(rng.integers(1, T + 1))
            start = int(rng.integers(0, T - n + 1))
            cache.write_span(_per_layer(rng.standard_normal((L, 2, 1, H, n, D)).astype(np.float32)), 0, slot, start, n)
        elif op == 1:
            src = int(rng.integers(S))
            cache.move(src, slot, int(rng.integers(0, T + 1)))
        else:
            n = int(rng.integers(1, T + 1))
            cache.copy_prefix(rng.standard_normal((L, 2, H, n, D)).astype(np.float32), slot, n)
        _others_unchanged(cache, before, slot)


def test_no_slots_is_exhausted():
    with pytest.raises(KVCacheExhausted, match="max_len"):
        KVCache(SHAPE, 0)
