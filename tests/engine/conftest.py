"""Fixtures of the run-time acceptance tests: engines over the session's tiny bundles
(from tests/conftest.py) and the PyTorch reference they are checked against.

Engines run with one intra-op thread: CI has two cores, shared with the codec
worker thread. A test that may break its engine (a bug, `close()`) makes its own
with `make_engine`; the session `engine` is shared and must stay healthy.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest


@pytest.fixture(scope="session")
def engine(tiny_bundle):
    """One shared engine over the K=4 tiny bundle: 8 slots, default chunk schedule."""
    from cadenza.engine import Engine

    e = Engine.load(tiny_bundle, threads=1, max_streams=8)
    yield e
    e.close()


@pytest.fixture
def make_engine(tiny_bundle):
    """Engine factory (closed at teardown): make_engine(bundle=None, **Engine.load kwargs)."""
    from cadenza.engine import Engine

    made = []

    def make(bundle=None, **kwargs):
        kwargs.setdefault("threads", 1)
        e = Engine.load(bundle or tiny_bundle, **kwargs)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Reference:
    """The eager PyTorch reference (`cadenza.export.reference.generate` + `codec.decode`), memoised."""

    def __init__(self, models: dict):
        self.models = models
        self._codes: dict = {}

    def codes(self, text: str, frames: int | None = None, model: str = "k4") -> np.ndarray:
        key = (text, frames, model)
        if key not in self._codes:
            from cadenza.export.reference import generate

            with _torch_threads(1):
                self._codes[key] = generate(self.models[model](), text, frames=frames).numpy()
        return self._codes[key]

    def pcm(self, codes: np.ndarray, model: str = "k4") -> np.ndarray:
        import torch

        with _torch_threads(1), torch.no_grad():
            return self.models[model]().codec.decode(torch.from_numpy(np.ascontiguousarray(codes))[None])[0].numpy()


@pytest.fixture(scope="session")
def reference(tiny_model, tiny_model_k1) -> Reference:
    """reference.codes(text, frames=None, model="k4"|"k1"), reference.pcm(codes, model=...)."""
    return Reference({"k4": lambda: tiny_model, "k1": lambda: tiny_model_k1})
