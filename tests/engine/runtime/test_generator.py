"""The row table every backend shares: slots, compaction, which rows a frame covers, the slot-full check."""
from __future__ import annotations

import numpy as np
import pytest

from cadenza.engine.errors import KVCacheExhausted
from cadenza.engine.runtime.generator import Row, RowTable
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler


def row(min_frames: int = 0, forced: bool = False) -> Row:
    r = Row(StreamSampler(SamplingParams(seed=0), 2), forced=forced)
    r.begin_segment(min_frames, 10)
    return r


def test_add_and_compacting_remove():
    t = RowTable(slots=3, max_len=16)
    a, b, c = row(), row(), row()
    assert [t.add(r) for r in (a, b, c)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="slots"):
        t.add(row())
    moved = t.remove(a)  # the last row moves into the hole
    assert (moved.row, moved.src, moved.dst, moved.framed) == (c, 2, 0, False)
    assert t.rows == [c, b] and t.index(b) == 1
    assert t.remove(b) is None  # the last row: nothing moves
    assert t.rows == [c] and len(t) == 1
    with pytest.raises(KeyError):
        t.index(b)


def test_frame_covers_the_rows_present_and_step_skips_rows_added_after():
    t = RowTable(slots=4, max_len=16)
    a, b = row(), row()
    t.add(a), t.add(b)
    assert t.begin_frame() == 2
    with pytest.raises(RuntimeError, match="before step"):
        t.begin_frame()
    late = row()
    t.add(late)  # admitted while the codec decodes: no frame yet
    assert t.step_batch() == 2
    t.end_step()
    assert (a.position, b.position, late.position) == (1, 1, 0)
    assert t.begin_frame() == 3


def test_framed_row_leaving_keeps_the_framed_prefix():
    t = RowTable(slots=3, max_len=16)
    a, b, c = row(), row(), row()
    for r in (a, b, c):
        t.add(r)
    t.begin_frame()
    moved = t.remove(a)
    assert moved.framed and moved.row is c  # c was framed too: its pending step moves with it
    assert t.step_batch() == 2
    t.end_step()
    assert (b.position, c.position) == (1, 1)


def test_a_framed_row_cannot_leave_after_rows_were_added_behind_the_frame():
    t = RowTable(slots=3, max_len=16)
    a, b = row(), row()
    t.add(a), t.add(b)
    t.begin_frame()
    t.add(row())
    with pytest.raises(RuntimeError, match="internal"):
        t.remove(a)  # would move an unframed row into the framed prefix


def test_eos_ban_and_frame_counts():
    t = RowTable(slots=3, max_len=16)
    rows = [row(min_frames=2), row(forced=True), row()]
    for r in rows:
        t.add(r)
    np.testing.assert_array_equal(t.eos_ban(3), [True, True, False])
    t.begin_frame()
    t.finish_frame([np.array([1, 2]), np.array([3, 4]), None])
    assert [r.frames for r in rows] == [1, 1, 0]
    assert [r.sampler.draws for r in rows] == [2, 2, 2]  # K draws per frame, end of speech included
    assert rows[0].sampler.history[:, 0].tolist() == [1, 2]


@pytest.mark.parametrize("start, n, fits", [(0, 8, True), (7, 1, True), (8, 1, False), (3, 6, False), (0, 9, False)])
def test_check_fits(start, n, fits):
    t = RowTable(slots=1, max_len=8)
    if fits:
        t.check_fits(start, n)
        return
    with pytest.raises(KVCacheExhausted, match="max_len") as err:
        t.check_fits(start, n, "the voice prompt")
    assert f"{start + n}" in str(err.value) and "8" in str(err.value) and "voice prompt" in str(err.value)


def test_a_full_slot_cannot_step():
    t = RowTable(slots=1, max_len=4)
    r = row()
    t.add(r)
    r.position = 4
    t.begin_frame()
    with pytest.raises(KVCacheExhausted, match="raise max_len"):
        t.step_batch()
