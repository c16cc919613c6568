"""Backends: the registry from a name to what runs a bundle's generation and codec.

Each backend implements the runtime's two contracts, `BatchGenerator`
(`runtime/generator.py`) and `CodecDecoder` (`runtime/codec_worker.py`), in its
own folder. The registry maps a name to a lazily imported opener, so choosing a
backend is one lookup and importing this module imports no backend library:

| name | generation | codec decoder |
| --- | --- | --- |
| `ort` (default) | ONNX Runtime, CPU | ONNX Runtime, CPU |
| `torch` | PyTorch eager, CPU (the reference) | ONNX Runtime, CPU |
| `torch-cuda` | PyTorch on CUDA: one CUDA graph per frame, on-device sampling | PyTorch on its own CUDA stream |

Another implementation of the two contracts registers a `Backend` with `register`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..contract.bundle import Bundle
from ..errors import BackendUnavailable


@dataclass
class Opened:
    """What a backend opened for one engine (closed by the engine's scheduler and codec worker)."""

    generator: object  # a runtime.generator.BatchGenerator
    codec: object  # a runtime.codec_worker.CodecDecoder


@dataclass(frozen=True)
class Backend:
    """A named way to run a bundle.

    Args:
        name: what `Engine.load(..., backend=name)` takes.
        summary: one line for error messages and docs.
        opener: "module:function"; the function takes (bundle, slots, max_len, threads,
            codec_threads, max_frames, spinning) and returns `Opened`. Imported on first use.
        kv_itemsize: bytes per KV-cache element (sizes the slots within the memory budget); 0: the
            bundle's own cache type (its graphs' `kv.dtype`).
    """

    name: str
    summary: str
    opener: str
    kv_itemsize: int = 0

    def open(self, bundle: Bundle, *, slots: int, max_len: int, threads: int, codec_threads: int,
             max_frames: int, spinning: bool = False) -> Opened:
        module, func = self.opener.split(":")
        fn: Callable[..., Opened] = getattr(importlib.import_module(module), func)
        return fn(bundle, slots=slots, max_len=max_len, threads=threads, codec_threads=codec_threads,
                  max_frames=max_frames, spinning=spinning)


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Add (or replace) a backend under its name."""
    _REGISTRY[backend.name] = backend


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; BackendUnavailable lists the others."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(f"{b.name} ({b.summary})" for b in _REGISTRY.values())
        raise BackendUnavailable(f"unknown backend {name!r}; available: {known}") from None


register(Backend("ort", "ONNX Runtime on the CPU; the default", "cadenza.engine.backends.ort:open_backend"))
register(Backend("torch", "PyTorch eager on the CPU, the reference; needs torch",
                 "cadenza.engine.backends.torch:open_cpu", kv_itemsize=4))
register(Backend("torch-cuda", "PyTorch with CUDA graphs on a GPU; needs a CUDA build of torch",
                 "cadenza.engine.backends.torch:open_cuda", kv_itemsize=2))
