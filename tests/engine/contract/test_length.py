"""The length policy: frame bounds per segment, and the longest text that fits a slot."""
from __future__ import annotations

import pytest

from cadenza.engine.contract.length import LengthPolicy
from cadenza.engine.errors import BundleError

REFERENCE = LengthPolicy()
FAMILY = LengthPolicy(min_factor=0.0, max_factor=3.0, extra=12, max_frames=171)


@pytest.mark.parametrize("frame_rate", [12.5, 25.0])
def test_bounds_monotone_and_ordered(frame_rate):
    prev = (0, 0)
    for n in range(1, 600, 7):
        lo, hi = REFERENCE.bounds("x" * n, frame_rate)
        assert 1 <= lo < hi, (n, lo, hi)
        assert lo >= prev[0] and hi >= prev[1], (n, prev, (lo, hi))
        prev = (lo, hi)
    assert prev[1] > 10 * REFERENCE.bounds("x", frame_rate)[1]  # actually grows with the text


def test_bounds_bracket_expected_duration():
    lo, hi = REFERENCE.bounds("x" * 140, 12.5)  # 10 s at 14 characters per second -> 125 frames at 12.5 Hz
    assert lo <= 125 <= hi


def test_a_trained_family_has_no_minimum_and_a_cap():
    assert FAMILY.bounds("Hello.", 11.71875)[0] == 0
    assert FAMILY.bounds("x" * 5000, 11.71875)[1] == 171


@pytest.mark.parametrize("policy", [REFERENCE, FAMILY], ids=["reference", "family"])
@pytest.mark.parametrize("frame_rate, per_frame, overhead", [(12.5, 1, 2), (11.71875, 7, 14), (25.0, 1, 5)])
def test_longest_text_is_the_largest_that_fits(policy, frame_rate, per_frame, overhead):
    for budget in range(0, 1500, 37):
        n = policy.longest_text(budget, frame_rate, per_frame, overhead)
        need = lambda k: k + overhead + policy.cap(k, frame_rate) * per_frame
        assert n == 0 or need(n) <= budget
        assert need(n + 1) > budget, (budget, n)


@pytest.mark.parametrize("bad", [{"chars_per_second": 0}, {"max_factor": -1}, {"extra": -2}, {"max_frames": -5}])
def test_out_of_range_policy_is_a_bundle_error(bad):
    d = {**REFERENCE.to_dict(), **bad}
    with pytest.raises(BundleError, match="length"):
        LengthPolicy.from_dict(d)
