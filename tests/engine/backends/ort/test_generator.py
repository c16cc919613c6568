"""`OrtGenerator`: rows join, leave and move (compaction) without touching each other's codes."""
from __future__ import annotations

import numpy as np
import pytest

from cadenza.engine.backends.ort.generator import OrtGenerator
from cadenza.engine.contract import text as tok
from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.runtime.generator import PrefillItem, Row
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler

TEXTS = ["Hello world.", "Zoë says: ça va? Fine, thanks!", "One, two, three."]


@pytest.fixture(scope="module")
def gen(tiny_bundle):
    g = OrtGenerator(Bundle.load(tiny_bundle), slots=3, max_len=128, threads=1)
    yield g
    g.close()


def _row(frames: int, seed: int) -> Row:
    row = Row(StreamSampler(SamplingParams(temperature=0.9, top_k=20, seed=seed), 4), forced=True)
    row.begin_segment(frames, frames)
    return row


def run(gen, texts: list[str], frames: int, leave: dict | None = None) -> list[np.ndarray]:
    """All rows join at once; row i leaves after frame `leave[i]` (else at `frames`)."""
    leave = leave or {}
    rows = [_row(frames, seed=TEXTS.index(t)) for t in texts]  # a stream's seed goes with its text
    for r in rows:
        gen.add(r)
    gen.prefill([PrefillItem(r, tok.prompt_tokens(t), np.zeros(256, np.float32)) for r, t in zip(rows, texts)])
    out = {id(r): [] for r in rows}
    for f in range(frames):
        for row, codes in zip(list(gen.rows), gen.frame()):
            out[id(row)].append(codes)
        for i, r in enumerate(rows):
            if leave.get(i) == f or (f == frames - 1 and r in gen.rows.rows):
                gen.remove(r)
        gen.step()
    return [np.stack(out[id(r)], axis=1) for r in rows]


def test_removing_a_middle_row_moves_the_last_row_intact(gen):
    solo = [run(gen, [t], 12)[0] for t in TEXTS]
    got = run(gen, TEXTS, 12, leave={0: 4})  # row 0 leaves after frame 4: row 2 moves into slot 0
    np.testing.assert_array_equal(got[0], solo[0][:, :5])
    np.testing.assert_array_equal(got[1], solo[1])
    np.testing.assert_array_equal(got[2], solo[2])
    assert len(gen.rows) == 0


def test_the_step_skips_rows_added_after_the_frame(gen):
    """A row admitted between frame() and step() keeps its prefill logits for its own first frame."""
    solo = run(gen, [TEXTS[1]], 6)[0]
    first = _row(6, 0)
    gen.add(first)
    gen.prefill([PrefillItem(first, tok.prompt_tokens(TEXTS[0]), np.zeros(256, np.float32))])
    gen.frame()
    late = _row(6, TEXTS.index(TEXTS[1]))
    gen.add(late)
    gen.prefill([PrefillItem(late, tok.prompt_tokens(TEXTS[1]), np.zeros(256, np.float32))])
    gen.step()
    codes = []
    for _ in range(6):
        codes.append(gen.frame()[1])
        gen.step()
    np.testing.assert_array_equal(np.stack(codes, axis=1), solo)
    gen.remove(first), gen.remove(late)
