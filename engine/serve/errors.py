"""Errors in OpenAI's JSON shape: `{"error": {"message", "type", "param", "code"}}`.

`ApiError` is what a route raises; `from_engine` maps the engine's typed errors
to a status code. Anything unexpected becomes a 500 with a generic message and
is logged on the server; the client never sees a traceback.
"""
from __future__ import annotations

import json
import logging

from ..errors import (BundleError, EngineBusy, EngineClosed, KVCacheExhausted, SamplingError, StreamCancelled,
                      TextError, VoiceError)

log = logging.getLogger("cadenza.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """An error response: status, message, and OpenAI's `code` / `param` fields."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    @property
    def kind(self) -> str:
        return _TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def json_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


def from_engine(e: BaseException, retry_after: int = 1) -> ApiError:
    """The response for an exception raised by the engine (or anything else: a logged 500)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, EngineBusy):
        return ApiError(429, f"the engine is busy: {e}", "engine_busy", headers={"Retry-After": str(retry_after)})
    if isinstance(e, (EngineClosed, StreamCancelled)):
        return ApiError(503, "the server is shutting down; retry on another instance", "shutting_down",
                        headers={"Retry-After": str(retry_after)})
    if isinstance(e, VoiceError):
        missing = "no voice named" in str(e) or "neither one of this model's voices" in str(e)
        return ApiError(404 if missing else 400, str(e), "voice_not_found" if missing else "invalid_voice", "voice")
    if isinstance(e, TextError):
        return ApiError(400, str(e), "invalid_input", "input")
    if isinstance(e, KVCacheExhausted):
        return ApiError(413, f"the input does not fit the engine's context: {e}", "input_too_long", "input")
    if isinstance(e, SamplingError):
        return ApiError(400, str(e), "invalid_sampling")
    if isinstance(e, BundleError):
        log.error("bundle error: %s", e)
        return ApiError(500, "the model bundle failed; see the server log", "bundle_error")
    log.exception("internal error", exc_info=e)
    return ApiError(500, "internal server error; see the server log", "internal_error")


def error_type(e: BaseException) -> str:
    """The label `/metrics` counts an error under."""
    return e.code or f"http_{e.status}" if isinstance(e, ApiError) else type(e).__name__


__all__ = ["ApiError", "from_engine", "error_type"]
