"""Cadenza's run time: bundles, backends, KV cache, sampler, scheduler and the streaming API.

Torch-free: streaming a bundle on ONNX Runtime needs only numpy and onnxruntime.
Names are imported lazily so that `cadenza.engine.text` stays cheap to import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Engine": "api", "Synthesis": "api", "Bundle": "bundle", "BundleError": "bundle",
    "SamplingParams": "sampler", "Chunk": "stream", "ChunkSchedule": "stream", "Stream": "stream",
    "CadenzaError": "errors", "KVCacheExhausted": "errors", "EngineBusy": "errors", "StreamCancelled": "errors",
    "EngineClosed": "errors", "SamplingError": "errors", "TextError": "errors", "BackendUnavailable": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
