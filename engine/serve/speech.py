"""`POST /v1/audio/speech`: OpenAI's request body, streamed audio or SSE.

The response waits for the engine's first chunk before it sends its status, so
any failure before the first audio (queue timeout, bad text) is a proper error
response; then the headers and the first audio bytes leave together. A client
that disconnects at any point cancels the engine stream (its KV slot is free
before the engine's next step). An engine failure after the first audio ends an
`audio` response without its final chunk (the client sees a truncated body) and
an `sse` response with an `error` event.
"""
from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass, field

import anyio

from .bridge import ChunkReader
from .encode import FORMATS, MEDIA_TYPES, Encoder
from .errors import ApiError, error_type, from_engine

OPENAI_FIELDS = {"model", "input", "voice", "response_format", "speed", "stream_format", "instructions"}
SAMPLING_FIELDS = {"seed": int, "temperature": float, "top_k": int, "top_p": float, "repetition_penalty": float}


@dataclass
class SpeechRequest:
    model: str
    input: str
    voice: object = None
    response_format: str = "mp3"
    stream_format: str = "audio"
    sampling: dict = field(default_factory=dict)


def _typed(name: str, value, kind: type):
    """A JSON number of the right kind (ints accepted for floats; bools never)."""
    ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if value is None:
        return None
    if isinstance(value, bool) or not ok or (kind is float and not math.isfinite(value)):
        raise ApiError(400, f"{name} must be {'an integer' if kind is int else 'a finite number'}, got {value!r}",
                       "invalid_parameter", name)
    return value


def parse_sampling(body: dict) -> dict:
    """Cadenza's optional sampling fields, type-checked (ranges are the engine's: SamplingError -> 400)."""
    return {k: v for k, kind in SAMPLING_FIELDS.items() if (v := _typed(k, body.get(k), kind)) is not None}


def parse_speech(body, max_chars: int) -> SpeechRequest:
    """OpenAI's body plus Cadenza's sampling fields; ApiError 400 / 413 with the field at fault."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    unknown = sorted(set(body) - OPENAI_FIELDS - set(SAMPLING_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; accepted: "
                       f"{', '.join(sorted(OPENAI_FIELDS | set(SAMPLING_FIELDS)))}", "unknown_parameter", unknown[0])
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "input must be a non-empty string", "invalid_input", "input")
    if len(text) > max_chars:
        raise ApiError(413, f"input has {len(text)} characters; this server takes at most {max_chars} per request "
                       "(split the text, or use the WebSocket endpoint for long text)", "input_too_long", "input")
    fmt = body.get("response_format", "mp3")
    if fmt not in FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}, got {fmt!r}",
                       "invalid_response_format", "response_format")
    stream_format = body.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        raise ApiError(400, f"stream_format must be 'audio' or 'sse', got {stream_format!r}",
                       "invalid_stream_format", "stream_format")
    speed = _typed("speed", body.get("speed", 1.0), float)
    if speed is not None and speed != 1.0:
        raise ApiError(400, f"speed={speed} is not supported: this server speaks at speed 1.0 only (resampling "
                       "would change the pitch); omit speed or send 1.0", "unsupported_speed", "speed")
    if body.get("instructions"):
        raise ApiError(400, "instructions are not supported by Cadenza's models; omit them",
                       "unsupported_parameter", "instructions")
    return SpeechRequest(body.get("model"), text, body.get("voice"), fmt, stream_format, parse_sampling(body))


def resolve_voice(engine, voice):
    """A voice from the network: a built-in voice name / speaker id, or a stored voice's *name*
    (never a path). None or "default": the model's default voice. ApiError 400 / 404."""
    from ..errors import VoiceError
    from ..voices.voice import check_name

    if isinstance(voice, dict) and set(voice) == {"id"}:  # OpenAI's {"id": "..."} form of a custom voice
        voice = voice["id"]
    if voice is None or voice == "default":
        return None
    if not isinstance(voice, str):
        raise ApiError(400, f"voice must be a voice name (a string), got {type(voice).__name__}", "invalid_voice",
                       "voice")
    if engine.voices.builtin_prompt(voice) is not None:
        return voice
    try:
        check_name(voice)
    except VoiceError as e:
        raise ApiError(400, str(e), "invalid_voice", "voice") from None
    if not engine.voices.store.path(voice).is_file():
        builtin = ", ".join(engine.voices.builtin) or "none"
        raise ApiError(404, f"no voice named {voice!r} for this model; built-in voices: {builtin}, plus 'default' "
                       "and the stored voices of GET /v1/voices", "voice_not_found", "voice")
    return voice


def usage(stream, n_codebooks: int) -> dict:
    """OpenAI's usage block: input tokens = prompt tokens of every segment, output = audio codes."""
    st = stream._st  # the stream's record: its segments' prompts so far
    n_in = sum(len(st.prompt(i)) for i in range(st.segment + 1))
    n_out = len(st.codes) * n_codebooks
    return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}


class SpeechResponse:
    """The ASGI response of one speech request (see the module docstring)."""

    def __init__(self, server, req: SpeechRequest, model: str, engine, stream, t0: float, endpoint="speech"):
        self.srv, self.req, self.model, self.engine, self.stream, self.t0 = server, req, model, engine, stream, t0
        self.endpoint = endpoint
        self.reader = ChunkReader(stream, server.live.executor, server.live)
        self.outcome = "cancelled"

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as tg:
                async def watch_disconnect():
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()  # the client left: stop streaming at once

                tg.start_soon(watch_disconnect)
                await self._respond(send)
                tg.cancel_scope.cancel()
        finally:
            self.reader.close()
            self.srv.metrics.finished(self.model, self.endpoint, self.stream, self.outcome)

    async def _respond(self, send) -> None:
        try:
            first = await self.reader.next()
        except Exception as e:  # noqa: BLE001 - before any byte: a proper error response
            err = from_engine(e, self.srv.config.retry_after_s)
            self.outcome = "error"
            self.srv.metrics.errors.labels(error_type(err)).inc()
            return await send_error(send, err)
        sse = self.req.stream_format == "sse"
        enc = Encoder(self.req.response_format, self.engine.sample_rate)
        media = "text/event-stream" if sse else MEDIA_TYPES[self.req.response_format]
        headers = [(b"content-type", media.encode()), (b"cache-control", b"no-cache"),
                   (b"x-sample-rate", str(self.engine.sample_rate).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        emit = self._sse if sse else self._audio
        try:
            await self._pump(first, enc, emit, send)
        finally:
            enc.close()

    async def _pump(self, first, enc: Encoder, emit, send) -> None:
        m, last, chunk = self.srv.metrics, None, first
        data = enc.header()
        try:
            while chunk is not None:
                data += enc.chunk(chunk.pcm)
                if data:
                    await emit(send, data)
                    now = time.perf_counter()
                    if last is None:
                        m.ttfa.labels(self.model, self.endpoint).observe(now - self.t0)
                    else:
                        m.gap.labels(self.model).observe(now - last)
                    last, data = now, b""
                m.audio.labels(self.model).inc(chunk.seconds)
                chunk = await self.reader.next()
        except Exception as e:  # noqa: BLE001 - after the first audio: an error event or a truncated body
            err = from_engine(e, self.srv.config.retry_after_s)
            self.outcome = "error"
            m.errors.labels(error_type(err)).inc()
            if self.req.stream_format == "sse":
                await send_sse(send, {"type": "error", **err.body()}, more=False)
                return
            raise StreamAborted(err.message) from None
        tail = enc.close()
        self.outcome = "ok"
        if self.req.stream_format == "sse":
            if tail:
                await self._sse(send, tail)
            done = {"type": "speech.audio.done", "usage": usage(self.stream, self.engine.n_codebooks)}
            await send_sse(send, done, more=False)
        else:
            await send({"type": "http.response.body", "body": tail, "more_body": False})

    @staticmethod
    async def _audio(send, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    @staticmethod
    async def _sse(send, data: bytes) -> None:
        await send_sse(send, {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})


class StreamAborted(Exception):
    """The engine failed after the first audio bytes: the connection is closed mid-body."""


async def send_sse(send, event: dict, more: bool = True) -> None:
    body = f"data: {json.dumps(event)}\n\n".encode()
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def send_error(send, err: ApiError) -> None:
    headers = [(b"content-type", b"application/json")] + [(k.lower().encode(), v.encode())
                                                           for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": err.json_bytes(), "more_body": False})


__all__ = ["SpeechRequest", "SpeechResponse", "parse_speech", "parse_sampling", "resolve_voice", "usage"]
