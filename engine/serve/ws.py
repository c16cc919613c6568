"""`WebSocket /v1/audio/speech/ws`: text in as an LLM writes it, audio out as it is generated.

Client -> server (JSON text frames):
    {"type": "session.update", "model": ..., "voice": ..., "response_format": "pcm", "seed": ..., ...}
        optional, between utterances: settings for the next ones (the sampling fields of
        /v1/audio/speech, plus `text_wait_ms`: the segmenter's timer, null to disable it)
    {"type": "text.delta", "delta": "..."}   text of the current utterance (starts one if none runs)
    {"type": "text.done"}                     the utterance's text is complete
    {"type": "cancel"}                        stop the current utterance now (its KV slot is freed)
Server -> client:
    {"type": "session.created" | "session.updated", "session": {...}}
    binary frames: the utterance's audio in `response_format` (default pcm: 16-bit LE mono)
    {"type": "audio.done", "usage": {...}, "audio_seconds": ...}   all audio of the utterance was sent
    {"type": "audio.cancelled"}                                      after a cancel: no more audio follows
    {"type": "error", "error": {"message", "type", "param", "code"}} the utterance (if any) is over;
        the socket stays open for the next one
Speech starts at the first clause boundary of the text, or after `text_wait_ms` with
enough text (`runtime/text_feed.py`). One utterance at a time per socket.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..runtime.text_feed import FeedRules
from .bridge import ChunkReader
from .encode import FORMATS, Encoder
from .errors import ApiError, error_type, from_engine
from .speech import parse_sampling, resolve_voice, usage

log = logging.getLogger("cadenza.serve")
_SESSION_FIELDS = {"type", "model", "voice", "response_format", "text_wait_ms", "seed", "temperature", "top_k",
                   "top_p", "repetition_penalty"}


class Utterance:
    """One utterance: the text queue feeding the engine and the task sending its audio."""

    def __init__(self, session: "WsSession", stream, pieces: asyncio.Queue):
        self.session, self.stream, self.pieces = session, stream, pieces
        self.chars, self.text_done = 0, False
        self.reader = ChunkReader(stream, session.srv.live.executor, session.srv.live)
        self.task = asyncio.get_running_loop().create_task(self.send_audio())

    async def send_audio(self) -> None:
        s, srv = self.session, self.session.srv
        enc = Encoder(s.settings["response_format"], s.engine.sample_rate)
        first_t = last = None
        outcome = "error"
        try:
            data = enc.header()
            while (chunk := await self.reader.next()) is not None:
                data += enc.chunk(chunk.pcm)
                if data:
                    await s.ws.send_bytes(data)
                    now = time.perf_counter()
                    if last is None:
                        first_t = now  # TTFA over the socket: from the first text.delta
                        srv.metrics.ttfa.labels(s.model, "ws").observe(now - s.t_text)
                    else:
                        srv.metrics.gap.labels(s.model).observe(now - last)
                    last, data = now, b""
                srv.metrics.audio.labels(s.model).inc(chunk.seconds)
            tail = enc.close()
            if tail:
                await s.ws.send_bytes(tail)
            outcome = "ok"
            self.release()  # the next text.delta may start the next utterance at once
            await s.send({"type": "audio.done", "usage": usage(self.stream, s.engine.n_codebooks),
                          "audio_seconds": round(self.stream.metrics.audio_seconds, 4),
                          "ttfa_s": None if first_t is None else round(first_t - s.t_text, 4)})
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as e:  # noqa: BLE001 - an engine failure ends the utterance with an error event
            self.release()
            with contextlib.suppress(Exception):  # the socket may be gone: nobody to tell
                await s.send_error(from_engine(e, srv.config.retry_after_s))
        finally:
            enc.close()
            self.reader.close()
            self.release()
            srv.metrics.finished(s.model, "ws", self.stream, outcome)

    def release(self) -> None:
        if self.session.current is self:
            self.session.current = None

    def cancel(self) -> None:
        self.pieces.put_nowait(None)
        self.reader.close()  # frees the KV slot now (non-blocking)
        self.task.cancel()


class WsSession:
    """One socket: its settings, the current utterance, the message loop."""

    def __init__(self, srv, ws: WebSocket):
        self.srv, self.ws = srv, ws
        names = list(srv.models.engines)
        self.settings = {"model": names[0] if len(names) == 1 else None, "voice": None, "response_format": "pcm",
                         "text_wait_ms": 300}
        self.sampling: dict = {}
        self.current: Utterance | None = None
        self.model = self.engine = None
        self.t_text = 0.0

    async def send(self, event: dict) -> None:
        await self.ws.send_text(json.dumps(event))

    async def send_error(self, err: ApiError) -> None:
        self.srv.metrics.errors.labels(error_type(err)).inc()
        await self.send({"type": "error", **err.body()})

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": self.describe()})
        try:
            while True:
                raw = await self.ws.receive_text()
                try:
                    await self.handle(raw)
                except ApiError as e:
                    await self.send_error(e)
        except WebSocketDisconnect:
            pass
        finally:
            if self.current is not None:
                self.current.cancel()

    def describe(self) -> dict:
        return {**self.settings, **self.sampling}

    async def handle(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ApiError(400, f"messages must be JSON objects: {e}", "invalid_json") from None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "text.delta":
            await self.on_delta(msg.get("delta"))
        elif kind == "text.done":
            self.on_done()
        elif kind == "cancel":
            await self.on_cancel()
        elif kind == "session.update":
            await self.on_update(msg)
        else:
            raise ApiError(400, f"unknown message type {kind!r}; send session.update, text.delta, text.done or "
                           "cancel", "invalid_message", "type")

    async def on_update(self, msg: dict) -> None:
        if self.current is not None:
            raise ApiError(400, "session.update applies between utterances; send it before text.delta or after "
                           "audio.done", "utterance_in_progress")
        unknown = sorted(set(msg) - _SESSION_FIELDS)
        if unknown:
            raise ApiError(400, f"unknown session field(s) {', '.join(unknown)}", "unknown_parameter", unknown[0])
        settings = {**self.settings, **{k: msg[k] for k in ("model", "voice", "response_format", "text_wait_ms")
                                        if k in msg}}
        if settings["response_format"] not in FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}", "invalid_response_format",
                           "response_format")
        wait = settings["text_wait_ms"]
        if wait is not None and (isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait <= 0):
            raise ApiError(400, "text_wait_ms must be a positive number or null", "invalid_parameter",
                           "text_wait_ms")
        engine = self.srv.models.get(settings["model"])
        resolve_voice(engine, settings["voice"])
        self.settings = settings
        self.sampling = {**self.sampling, **parse_sampling(msg)}
        await self.send({"type": "session.updated", "session": self.describe()})

    async def on_delta(self, delta) -> None:
        if not isinstance(delta, str):
            raise ApiError(400, "text.delta needs a string field delta", "invalid_message", "delta")
        u = self.current
        if u is not None and u.text_done:
            raise ApiError(400, "this utterance's text is done; wait for audio.done (or cancel) before the next",
                           "utterance_in_progress")
        if u is None:
            u = self.current = self.start()
        u.chars += len(delta)
        if u.chars > self.srv.config.max_ws_chars:
            await self.on_cancel(announce=False)
            raise ApiError(413, f"an utterance is limited to {self.srv.config.max_ws_chars} characters; send "
                           "text.done earlier and start a new one", "input_too_long", "delta")
        u.pieces.put_nowait(delta)

    def on_done(self) -> None:
        if self.current is None or self.current.text_done:
            raise ApiError(400, "text.done without an utterance in progress", "no_utterance")
        self.current.text_done = True
        self.current.pieces.put_nowait(None)

    async def on_cancel(self, announce: bool = True) -> None:
        u, self.current = self.current, None
        if u is not None:
            u.cancel()
            try:
                await u.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - it was cancelled
                pass
        if announce:
            await self.send({"type": "audio.cancelled"})

    def start(self) -> Utterance:
        """A new utterance: an engine stream over the text queue (raises ApiError)."""
        if self.srv.live.draining:
            raise ApiError(503, "the server is shutting down", "shutting_down")
        self.model = self.settings["model"]
        if self.model is None:
            raise ApiError(400, "several models are loaded: send session.update with model first", "invalid_model",
                           "model")
        self.engine = self.srv.models.get(self.model)
        voice = resolve_voice(self.engine, self.settings["voice"])
        wait = self.settings["text_wait_ms"]
        rules = FeedRules(wait_s=None if wait is None else wait / 1000)
        pieces: asyncio.Queue = asyncio.Queue()

        async def text():
            while (piece := await pieces.get()) is not None:
                yield piece

        self.t_text = time.perf_counter()
        try:
            stream = self.engine.stream(text(), voice, feed_rules=rules, **self.sampling)
        except Exception as e:  # noqa: BLE001 - sampling / voice errors
            raise from_engine(e, self.srv.config.retry_after_s) from None
        return Utterance(self, stream, pieces)


async def speech_ws(websocket: WebSocket) -> None:
    srv = websocket.app.state.cadenza
    await websocket.accept()
    await WsSession(srv, websocket).run()


__all__ = ["speech_ws", "WsSession"]
