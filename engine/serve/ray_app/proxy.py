"""OpenAI's error shape for the errors Ray Serve's HTTP proxy answers itself.

Some requests never reach a replica: every replica busy and the proxy's queue full
(429, `max_queued_requests`), no replica running (503), the request timeout (408),
a replica that died before the response started (500). Ray's proxy answers those in
plain text. Loaded into the proxy, `OpenAIErrors` rewrites them into the JSON every
other error of the server has (`{"error": {"message", "type", "param", "code"}}`),
keeping Ray's status and headers (`Retry-After`, `X-Request-ID`). Responses from the
replicas pass through untouched: their errors are JSON already, and audio streams
only pass through one more `send`.

The proxy loads it when its node was started with

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=cadenza.engine.serve.ray_app.proxy:middlewares

in the environment (`cadenza serve --ray` sets it for the local cluster it starts). It
applies to every application on that cluster's proxies.
"""
from __future__ import annotations

from ..errors import ApiError

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "cadenza.engine.serve.ray_app.proxy:middlewares"

CODES = {
    408: ("request_timeout", "the request timed out in Ray Serve"),
    429: ("engine_busy", "every replica is busy and the queue for them is full; retry after Retry-After seconds"),
    500: ("replica_failed", "the replica serving this request failed before answering; retry"),
    503: ("unavailable", "no replica can take this request now; retry shortly"),
}


def openai_error(status: int, ray_message: str) -> ApiError:
    """The `ApiError` for one of Ray's plain-text error responses."""
    code, what = CODES.get(status, (f"http_{status}", "Ray Serve refused the request"))
    detail = " ".join(ray_message.split())[:300]
    return ApiError(status, f"{what} (Ray Serve: {detail})" if detail else what, code)


class OpenAIErrors:
    """ASGI middleware for Ray Serve's proxy (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}

        async def rewrite(message):
            kind = message["type"]
            if kind == "http.response.start" and message["status"] >= 400 and _plain_text(message):
                held.update(start=message, body=b"")
                return
            if kind == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body", False):
                    return
                start = held.pop("start")
                err = openai_error(start["status"], held["body"].decode("utf-8", "replace"))
                data = err.json_bytes()
                keep = [(k, v) for k, v in start.get("headers", [])
                        if k.lower() not in (b"content-type", b"content-length")]
                await send({**start, "headers": [*keep, (b"content-type", b"application/json"),
                                                 (b"content-length", str(len(data)).encode())]})
                await send({"type": "http.response.body", "body": data})
                return
            await send(message)

        await self.app(scope, receive, rewrite)


def _plain_text(start: dict) -> bool:
    for k, v in start.get("headers", []):
        if k.lower() == b"content-type":
            return v.lower().startswith(b"text/plain")
    return False


def middlewares() -> list:
    """The proxy callback (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`): the middlewares to install."""
    from starlette.middleware import Middleware

    return [Middleware(OpenAIErrors)]


__all__ = ["OpenAIErrors", "middlewares", "openai_error", "PROXY_CALLBACK_ENV", "PROXY_CALLBACK"]
