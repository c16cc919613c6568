"""Cadenza's run time: `Engine.load(bundle).stream(text)` -> chunks of PCM.

The folders are the architecture:

- `contract/`: what a bundle is (manifest, typed constants, the text rules);
- `runtime/`: the request, the scheduler, the generator contract and row table,
  KV cache, prefix cache, sampler, codec worker, pacing, metrics, the stream;
- `backends/`: a registry of implementations of the runtime's contracts
  (`ort/`: ONNX Runtime, the default; `torch/`: PyTorch on CPU or CUDA);
- `voices/`: voice files, the store, audio input, the encoders;
- `cli/`: the `cadenza` command;
- `api.py`: `Engine`, which wires them together.

Streaming with the `ort` backend needs only numpy and onnxruntime (no PyTorch).
Names are imported lazily so that `cadenza.engine.contract.text` stays cheap to import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Engine": "api", "Synthesis": "api", "Bundle": "contract.bundle", "SamplingParams": "runtime.sampler",
    "Chunk": "runtime.stream", "Stream": "runtime.stream", "ChunkSchedule": "runtime.pacing", "Voice": "voices.voice",
    "BackendUnavailable": "errors", "BundleError": "errors", "CadenzaError": "errors", "EngineBusy": "errors",
    "EngineClosed": "errors", "KVCacheExhausted": "errors", "SamplingError": "errors", "StreamCancelled": "errors",
    "TextError": "errors", "VoiceError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
