"""`OrtGraph`: preallocated outputs, inputs bound by pointer, and a steady batch that binds nothing."""
from __future__ import annotations

import numpy as np
import pytest

from cadenza.engine.backends.ort.graph import OrtGraph, dim_value
from cadenza.engine.backends.ort.generator import OrtGenerator
from cadenza.engine.contract import text as tok
from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.runtime.generator import PrefillItem, Row
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Bundle:
    return Bundle.load(tiny_bundle)


def test_dim_expressions():
    assert dim_value(3, {}) == 3
    assert dim_value("frames", {"frames": 4}) == 4
    assert dim_value("frames*1920", {"frames": 2}) == 3840
    assert dim_value("samples/1920", {"samples": 3 * 1920 + 5}) == 3


def test_outputs_are_views_of_preallocated_buffers(bundle):
    g = OrtGraph(bundle, "codec_decode", {"batch": 2, "frames": 4}, threads=1)
    feeds = {"codes": np.zeros((1, 4, 3), np.int64)}
    feeds.update({s["input"]: np.zeros((1, *s["shape"]), np.float32) for s in g.state})
    first = g.run(feeds)["pcm"]
    again = g.run(feeds)["pcm"]
    assert first.shape == (1, 3 * 1920) and np.shares_memory(first, again)  # overwritten by the next run
    with pytest.raises(ValueError, match="C-contiguous int64"):
        g.run({**feeds, "codes": np.zeros((1, 4, 3), np.int32)})
    with pytest.raises(ValueError, match="disagrees"):
        g.run({**feeds, "codes": np.zeros((2, 4, 3), np.int64)})


def _row(n: int) -> Row:
    row = Row(StreamSampler(SamplingParams(greedy=True), 4), forced=True)
    row.begin_segment(n, n)
    return row


def test_a_steady_batch_binds_nothing(bundle):
    """Decode steps at a constant batch reuse the IO binding: the backbone and depth graphs bind once per
    batch size, not once per call."""
    gen = OrtGenerator(bundle, slots=3, max_len=64, threads=1)
    rows = [_row(20) for _ in range(2)]
    for r in rows:
        gen.add(r)
    gen.prefill([PrefillItem(r, tok.prompt_tokens("Hi."), np.zeros(256, np.float32)) for r in rows])
    gen.frame(), gen.step()  # first call at batch 2: binds
    step_binds, depth_binds = gen.backbone.graph.binds, gen.depth.graph.binds
    for _ in range(10):
        gen.frame()
        gen.step()
    assert gen.backbone.graph.binds == step_binds  # 10 more steps, the same binding
    assert gen.depth.graph.binds == depth_binds  # 30 more depth steps (K - 1 = 3 per frame)
    gen.remove(rows[0])
    gen.frame(), gen.step()  # the batch changed: one new binding each
    assert gen.backbone.graph.binds == step_binds + 1
    gen.close()
