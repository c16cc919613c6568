"""Helpers shared by the run-time acceptance tests (tests/engine).

Nothing here imports torch: the reference side lives in conftest fixtures.
Every read of a stream goes through `collect` with a deadline, so a dead
scheduler thread fails the test instead of hanging the whole session.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from cadenza.engine.voices.voice import Voice

TEXTS = {
    "short": "Hello world.",
    "utf8": "Zoë says: ça va? Fine, thanks!",
    "cjk": "日本語のテキスト、こんにちは。",
}
LONG_TEXT = ("Hello there. This is a longer text, split into pieces. "
             "And one more sentence here, to be sure it needs several segments.")


class Collected:
    """What one read of a stream produced."""

    def __init__(self, stream):
        self.stream = stream
        self.chunks: list = []
        self.error: BaseException | None = None
        self.finished = False

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate([c.pcm for c in self.chunks]) if self.chunks else np.zeros(0, np.float32)

    @property
    def codes(self) -> np.ndarray:
        return self.stream.codes


def collect(stream, timeout: float = 30.0, stop_after: int | None = None, on_chunk=None) -> Collected:
    """Iterate `stream` on a daemon thread (breaking after `stop_after` chunks if given).

    Raises AssertionError if the iteration does not end within `timeout` seconds
    (the sign of a dead scheduler or a lost end marker). The stream's own error,
    if any, is returned in `.error`, not raised."""
    res = Collected(stream)

    def run():
        try:
            for chunk in stream:
                res.chunks.append(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
                if stop_after is not None and len(res.chunks) >= stop_after:
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the test
            res.error = e
        res.finished = True

    t = threading.Thread(target=run, daemon=True, name="test-reader")
    t.start()
    t.join(timeout)
    assert res.finished, f"stream did not end within {timeout} s (scheduler dead or end marker lost?)"
    return res


def read(stream, timeout: float = 30.0) -> Collected:
    """`collect`, re-raising the stream's error."""
    res = collect(stream, timeout)
    if res.error is not None:
        raise res.error
    return res


def wait_for(pred, timeout: float = 10.0, interval: float = 0.002) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def assert_contiguous(chunks, total_frames: int, hop: int) -> None:
    """Chunk frame ranges are [0, a), [a, b), ... covering exactly `total_frames`, each with n * hop samples."""
    start = 0
    for c in chunks:
        a, b = c.frames
        assert a == start and b > a, f"chunk frames {c.frames} do not continue at {start}"
        assert len(c.pcm) == (b - a) * hop
        assert c.pcm.dtype == np.float32
        start = b
    assert start == total_frames


# --- voices ---------------------------------------------------------------------------
SR, E, K, HOP = 24_000, 256, 4, 1920
TEXT = "Hello there."


def codes(engine, voice) -> np.ndarray:
    s = engine.stream(TEXT, voice=voice, greedy=True, frames=12)
    s.read_all()
    return s.codes


def make_voice(bundle, name="v", value=1.0, prompt=None, **meta) -> Voice:
    m = {"family": bundle.manifest["family"], "bundle_hash": bundle.hash, "duration_s": 3.0, **meta}
    return Voice(name, np.full(E, value, np.float32), prompt, "hi" if prompt is not None else None, m)
