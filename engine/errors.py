"""Typed errors at Cadenza's API boundaries. Each message says what to do."""
from __future__ import annotations

from .text import TextError


class CadenzaError(RuntimeError):
    """Base class of the engine's run-time errors."""


class BundleError(CadenzaError):
    """The bundle is missing, corrupt, edited, or built for another format version."""


class KVCacheExhausted(CadenzaError):
    """A prompt (plus its frames) does not fit a KV slot."""


class EngineBusy(CadenzaError):
    """No stream slot came free within the wait-queue timeout, or the queue is full."""


class StreamCancelled(CadenzaError):
    """The stream was cancelled before it finished."""


class EngineClosed(CadenzaError):
    """The engine was closed; load it again."""


class SamplingError(ValueError):
    """Invalid sampling parameters."""


class BackendUnavailable(CadenzaError):
    """The requested backend is unknown or its libraries are missing."""


__all__ = ["BundleError", "TextError", "CadenzaError", "KVCacheExhausted", "EngineBusy", "StreamCancelled",
           "EngineClosed", "SamplingError", "BackendUnavailable"]


class VoiceError(CadenzaError):
    """A voice sample, voice file or voice name is unusable (each message says why and what to do)."""


__all__ += ["VoiceError"]
