"""The ASGI app: `create_app(engines=... | bundles=..., config=ServeConfig(...))`.

Mount it in your own service (`app.mount("/tts", create_app(...))`) or run it with
`cadenza serve`. Routes: `/health`, `/ready`, `/metrics`, `/v1/models`,
`/v1/audio/speech`, `/v1/audio/speech/ws`, `/v1/voices` (see docs/server.md).
`Gate`, the outermost layer, answers 503 while draining, 401 without the key on
`/v1` routes (constant-time compare) and 413 for bodies over the limit, before
any route runs. The engine core never imports this package.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from .errors import ApiError, error_type, from_engine
from .metrics import ServerMetrics
from .speech import SpeechResponse, parse_speech, resolve_voice
from .state import Live, Models, ServeConfig
from .voices import add_voice, delete_voice, list_voices
from .ws import speech_ws

log = logging.getLogger("cadenza.serve")


class CadenzaServer:
    """What the routes share (`request.app.state.cadenza`)."""

    def __init__(self, models: Models, config: ServeConfig):
        self.models, self.config = models, config
        self.metrics = ServerMetrics()
        self.live = Live()
        for name, engine in models.engines.items():
            self.metrics.watch(name, engine)

    def begin_drain(self) -> None:
        """Stop taking new work (503); in-flight streams go on until `cancel_all`."""
        self.live.draining = True


# --- routes ---------------------------------------------------------------------------------
def _srv(request) -> CadenzaServer:
    return request.app.state.cadenza


async def health(request: Request) -> JSONResponse:
    srv = _srv(request)
    return JSONResponse({"status": "ok", "draining": srv.live.draining, "streams": len(srv.live)})


async def ready(request: Request) -> JSONResponse:
    srv = _srv(request)
    if srv.live.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if srv.models.error:
        return JSONResponse({"status": "failed", "error": srv.models.error}, status_code=503)
    if not srv.models.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "models": sorted(srv.models.engines)})


async def metrics(request: Request) -> Response:
    srv = _srv(request)
    return Response(srv.metrics.render(), media_type=srv.metrics.content_type)


async def list_models(request: Request) -> JSONResponse:
    data = []
    for name, e in sorted(_srv(request).models.engines.items()):
        data.append({"id": name, "object": "model", "created": int(e.bundle.path.stat().st_mtime),
                     "owned_by": "cadenza", "family": e.bundle.family, "sample_rate": e.sample_rate,
                     "voices": ["default", *e.voices.builtin], "max_streams": e.slots})
    return JSONResponse({"object": "list", "data": data})


async def read_json(request: Request):
    body = await request.body()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", "invalid_json") from None


async def speech(request: Request):
    srv, t0 = _srv(request), time.perf_counter()
    req = parse_speech(await read_json(request), srv.config.max_input_chars)
    engine = srv.models.get(req.model)
    voice = resolve_voice(engine, req.voice)
    loop = asyncio.get_running_loop()
    try:
        stream = await loop.run_in_executor(srv.live.executor,
                                            lambda: engine.stream(req.input, voice, **req.sampling))
    except Exception as e:  # noqa: BLE001 - typed engine errors -> their status
        raise from_engine(e, srv.config.retry_after_s) from None
    return SpeechResponse(srv, req, req.model, engine, stream, t0)


# --- errors -----------------------------------------------------------------------------------
async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    err = exc if isinstance(exc, ApiError) else from_engine(exc)
    if isinstance(exc, HTTPException):
        err = ApiError(exc.status_code, exc.detail if isinstance(exc.detail, str) else "error",
                       "not_found" if exc.status_code == 404 else f"http_{exc.status_code}")
    _srv(request).metrics.errors.labels(error_type(err)).inc()
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


# --- the gate: drain, auth, body size -------------------------------------------------------
class Gate:
    """ASGI middleware in front of every route (see the module docstring)."""

    def __init__(self, app, server: CadenzaServer):
        self.app, self.srv = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path, cfg = scope["path"], self.srv.config
        err = None
        if path.startswith("/v1/") and self.srv.live.draining:
            err = ApiError(503, "the server is shutting down; retry on another instance", "shutting_down",
                           headers={"Retry-After": str(cfg.retry_after_s)})
        elif path.startswith("/v1/") and cfg.api_key is not None and not self._authorized(scope):
            err = ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        elif scope["type"] == "http":
            limit = cfg.max_upload_bytes if path == "/v1/voices" else cfg.max_body_bytes
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > limit:
                err = ApiError(413, f"the request body is over this route's {limit}-byte limit", "body_too_large")
            receive = _limited(receive, limit)
        if err is None:
            return await self.app(scope, receive, send)
        self.srv.metrics.errors.labels(error_type(err)).inc()
        if scope["type"] == "websocket":
            return await _deny_websocket(receive, send, err)
        if err.status == 413:
            await _discard_body(receive, 8 * (cfg.max_upload_bytes + cfg.max_body_bytes))
        await _send_json(send, err)

    def _authorized(self, scope) -> bool:
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.srv.config.api_key.encode())


def _limited(receive, limit: int):
    """`receive` that refuses a body growing past `limit` bytes (a chunked upload has no length)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        msg = await receive()
        if msg["type"] == "http.request":
            seen += len(msg.get("body", b""))
            if seen > limit:
                if msg.get("more_body", False):
                    await _discard_body(receive, 8 * limit)  # the client reads the 413, not a reset
                raise ApiError(413, f"the request body is over this route's {limit}-byte limit", "body_too_large")
        return msg

    return wrapped


async def _discard_body(receive, cap: int) -> None:
    """Read (and drop) a refused body up to `cap` bytes, so that the client, still sending, reads the
    413 instead of a connection reset; a body beyond the cap is cut off (the connection closes)."""
    seen = 0
    while seen <= cap:
        msg = await receive()
        if msg["type"] != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


async def _send_json(send, err: ApiError) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": err.json_bytes()})


async def _deny_websocket(receive, send, err: ApiError) -> None:
    """Refuse the handshake with the error as an HTTP response (the denial-response extension), or
    close with 1008 / 1013 where the server lacks it."""
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    headers = [(b"content-type", b"application/json")] + [(k.lower().encode(), v.encode())
                                                           for k, v in err.headers.items()]
    try:
        await send({"type": "websocket.http.response.start", "status": err.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": err.json_bytes()})
    except Exception:  # noqa: BLE001 - no denial responses here
        await send({"type": "websocket.close", "code": 1013 if err.status == 503 else 1008})


def create_app(engines: dict | None = None, *, bundles: dict | None = None, config: ServeConfig | None = None,
               engine_kwargs: dict | None = None, wait_loaded: bool = False, **config_kwargs):
    """The server as an ASGI app.

    Args:
        engines: name -> a loaded `Engine` (the caller keeps and closes them).
        bundles: name -> bundle directory, loaded (and closed) by the app; `/ready` says when.
        config: `ServeConfig`, or its fields as keyword arguments (api_key=..., max_input_chars=...).
        engine_kwargs: `Engine.load` arguments for `bundles` (max_streams, max_queue, threads, voice_store).
        wait_loaded: the lifespan's startup waits until every bundle is loaded and fails if one does
            not load (a replica behind a router, which must not take requests before it can serve them;
            `cadenza.engine.serve.ray_app`). By default startup returns at once and `/ready` says when.
    Returns:
        the app; `app.state.cadenza` is its `CadenzaServer` (models, metrics, live streams).
    """
    config = config or ServeConfig(**config_kwargs)
    models = Models(engines, bundles, engine_kwargs)
    server = CadenzaServer(models, config)

    @asynccontextmanager
    async def lifespan(app):
        models.start(on_loaded=server.metrics.watch)
        try:
            if wait_loaded and not await asyncio.to_thread(models.wait):
                raise RuntimeError(f"loading the models failed: {models.error}")
            yield
        finally:
            server.live.close()
            await asyncio.to_thread(models.close)

    routes = [
        Route("/health", health), Route("/ready", ready), Route("/metrics", metrics),
        Route("/v1/models", list_models),
        Route("/v1/audio/speech", speech, methods=["POST"]),
        WebSocketRoute("/v1/audio/speech/ws", speech_ws),
        Route("/v1/voices", list_voices, methods=["GET"]),
        Route("/v1/voices", add_voice, methods=["POST"]),
        Route("/v1/voices/{name}", delete_voice, methods=["DELETE"]),
    ]
    handlers = {ApiError: _api_error, HTTPException: _api_error, Exception: _api_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.cadenza = server
    app.add_middleware(Gate, server=server)
    return app


__all__ = ["create_app", "CadenzaServer", "ServeConfig"]
