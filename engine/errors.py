"""Every typed error of Cadenza's run time. Each message says what to do.

`CadenzaError` is the base of the run-time failures; `TextError` and
`SamplingError` are also `ValueError`s (bad arguments).
"""
from __future__ import annotations


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


class BackendUnavailable(CadenzaError):
    """The requested backend is unknown or its libraries are missing."""


class VoiceError(CadenzaError):
    """A voice sample, voice file or voice name is unusable (each message says why and what to do)."""


class TextError(ValueError):
    """The text cannot be synthesised as given (empty, or a piece too long to fit)."""


class SamplingError(ValueError):
    """Invalid sampling parameters."""


__all__ = ["BackendUnavailable", "BundleError", "CadenzaError", "EngineBusy", "EngineClosed", "KVCacheExhausted",
           "SamplingError", "StreamCancelled", "TextError", "VoiceError"]
