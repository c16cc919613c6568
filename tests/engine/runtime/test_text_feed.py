"""Incremental text: the segmenter's rules, and `engine.stream(pieces)` against whole-text streams.

The guarantee under test: without the timer rule, segments depend on the text alone,
however it is cut into pieces; the same segments and seed give the same codes, and the
same PCM (bitwise when the chunks are the same, to float rounding when a wait for text
changed where chunks were cut). A one-segment text gives exactly `engine.stream(text)`.
"""
from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from cadenza.engine.contract.text import split_text
from cadenza.engine.errors import TextError
from cadenza.engine.runtime.text_feed import FeedRules, Segmenter
from support import collect, read, wait_for

TEXT = "Hello there, my good friend. How are you doing today? I am fine - thanks for asking."
EXACT = FeedRules(wait_s=None)


def segments(pieces, max_bytes=200, rules=EXACT):
    s = Segmenter(max_bytes, rules)
    out = [seg for p in pieces for seg in s.push(p)]
    return out + s.finish()


def cuts(text, rng, most=7):
    """`text` cut into random pieces of 1..most characters."""
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, most)
        out.append(text[i:i + n])
        i += n
    return out


def test_boundaries_follow_split_text_marks():
    assert segments([TEXT]) == ["Hello there,", "my good friend.", "How are you doing today?",
                                "I am fine - thanks for asking."]  # "I am fine -" is under min_clause_bytes
    assert segments(["Well, yes. No"]) == ["Well, yes.", "No"]  # a short clause waits for more


def test_segments_do_not_depend_on_how_the_text_is_cut():
    rng = random.Random(0)
    long = " ".join([TEXT] * 6) + " " + "word " * 80
    for text, limit in ((TEXT, 200), (long, 60), (long, 23)):
        whole = segments([text], limit)
        assert all(len(s.encode()) <= limit for s in whole)
        for _ in range(20):
            assert segments(cuts(text, rng), limit) == whole


def test_a_limit_cut_is_the_last_space_within_the_limit():
    s = "aaaa bbbb cccc dddd eeee"
    assert segments([s], 10) == ["aaaa bbbb", "cccc dddd", "eeee"] == split_text(s, 10)
    with pytest.raises(TextError, match="no space to split"):
        segments(["x" * 30], 10)


def test_timer_rule_releases_up_to_the_last_space():
    s = Segmenter(200, FeedRules(wait_bytes=10))
    assert s.push("no boundary in this one yet") == []
    assert s.timeout() == ["no boundary in this one"]
    assert s.buffer == " yet"
    assert s.timeout() == []  # under wait_bytes: keeps waiting
    assert s.finish() == ["yet"]


def test_pieces_give_the_codes_of_the_whole_text(engine):
    rng = random.Random(1)
    whole = read(engine.stream(iter([TEXT]), seed=3, feed_rules=EXACT))
    assert whole.stream.metrics.segments == 4
    small = read(engine.stream(iter(cuts(TEXT, rng)), seed=3, feed_rules=EXACT))
    np.testing.assert_array_equal(small.codes, whole.codes)
    np.testing.assert_array_equal(small.pcm, whole.pcm)


def test_a_one_segment_text_is_exactly_engine_stream(engine):
    text = "Hello there my good friend"
    want = read(engine.stream(text, seed=5))
    got = read(engine.stream(iter(["Hel", "lo the", "re my go", "od friend"]), seed=5))
    np.testing.assert_array_equal(got.codes, want.codes)
    np.testing.assert_array_equal(got.pcm, want.pcm)


def test_slow_text_leaves_the_slot_and_keeps_the_codes(engine):
    """Waits between clauses: the stream parks (no slot held), rejoins, and generates the same codes."""
    want = read(engine.stream(iter([TEXT]), seed=3, feed_rules=EXACT))
    parked = []

    def slow():
        for word in TEXT.split(" "):
            yield word + " "
            if word.endswith((",", ".", "?")):
                parked.append(wait_for(lambda: engine.active_streams == 0, timeout=5))
                time.sleep(0.05)

    got = read(engine.stream(slow(), seed=3, feed_rules=EXACT))
    assert any(parked), "the stream never left its slot while it waited for text"
    assert got.stream.metrics.text_waits
    np.testing.assert_array_equal(got.codes, want.codes)
    np.testing.assert_allclose(got.pcm, want.pcm, rtol=0, atol=1e-6)  # chunks cut elsewhere: float rounding
    assert got.stream.metrics.summary()["underruns"] == 0  # waiting for text is not an underrun


def test_async_iterable(engine):
    want = read(engine.stream(iter([TEXT]), seed=2, feed_rules=EXACT))

    async def pieces():
        for p in cuts(TEXT, random.Random(2)):
            await asyncio.sleep(0)
            yield p

    async def main():
        return np.concatenate([c.pcm async for c in engine.astream(pieces(), seed=2, feed_rules=EXACT)])

    np.testing.assert_array_equal(asyncio.run(main()), want.pcm)
    with pytest.raises(TypeError, match="running event loop"):
        engine.stream(pieces())


def test_cancel_while_waiting_for_text_frees_everything(engine):
    gate = []

    def stalled():
        yield "First sentence here. "
        while not gate:
            time.sleep(0.01)
        yield "never spoken"

    s = engine.stream(stalled(), seed=1)
    first = collect(s, stop_after=1)  # breaking out of the iteration closes the stream
    gate.append(True)
    assert first.error is None and len(first.chunks) == 1
    assert engine.active_streams == 0 and not engine.scheduler.parked and not engine.scheduler.waiting


@pytest.mark.parametrize("source, match", [
    (iter(["  ", "\n"]), "empty"),
    (iter(["ok", 3]), "must be str"),
    (iter(["x" * 5000]), "no space to split"),
])
def test_bad_text_fails_the_stream_with_a_typed_error(engine, source, match):
    res = collect(engine.stream(source))
    assert isinstance(res.error, TextError) and match in str(res.error)
    assert wait_for(lambda: engine.active_streams == 0)


def test_a_failing_source_fails_the_stream(engine):
    def broken():
        yield "Hello there, friend. "
        raise RuntimeError("the LLM went away")

    res = collect(engine.stream(broken()))
    assert isinstance(res.error, RuntimeError) and "went away" in str(res.error)
    assert wait_for(lambda: engine.active_streams == 0 and not engine.scheduler.parked)


def test_frames_needs_a_whole_text(engine):
    with pytest.raises(ValueError, match="frames=N"):
        engine.stream(iter(["a"]), frames=3)
