"""`OpenAIErrors`, the middleware Ray's proxy loads: its own plain-text errors become OpenAI's JSON; the
app's JSON errors and streamed audio pass untouched. Driven through a Starlette app that answers the
way Ray's proxy does (the cluster test sees the real 429)."""
from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

pytest.importorskip("ray", reason="the Ray Serve tests need the [ray] extra: pip install -e .[ray]")

from cadenza.engine.serve.ray_app.proxy import OpenAIErrors, middlewares  # noqa: E402

RAY_429 = "Request dropped due to backpressure (num_queued_requests=8, max_queued_requests=8)."


def _app():
    async def busy(request):
        return PlainTextResponse(RAY_429, status_code=429, headers={"Retry-After": "1", "X-Request-ID": "r1"})

    async def gone(request):
        return PlainTextResponse("", status_code=503)

    async def app_error(request):
        return JSONResponse({"error": {"message": "m", "type": "not_found_error", "param": "model",
                                       "code": "model_not_found"}}, status_code=404)

    async def audio(request):
        async def pieces():
            for i in range(3):
                yield bytes([i]) * 1000
        return StreamingResponse(pieces(), media_type="audio/pcm")

    routes = [Route("/busy", busy), Route("/gone", gone), Route("/app", app_error), Route("/audio", audio)]
    return Starlette(routes=routes, middleware=[Middleware(OpenAIErrors)])


def test_rays_own_errors_become_openai_json_with_their_status_and_headers():
    with TestClient(_app()) as client:
        r = client.get("/busy")
        assert r.status_code == 429 and r.headers["content-type"] == "application/json"
        assert r.headers["retry-after"] == "1" and r.headers["x-request-id"] == "r1"
        err = r.json()["error"]
        assert (err["type"], err["code"], err["param"]) == ("rate_limit_error", "engine_busy", None)
        assert "every replica is busy" in err["message"] and "max_queued_requests=8" in err["message"]
        r = client.get("/gone")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"


def test_the_apps_responses_pass_untouched():
    with TestClient(_app()) as client:
        r = client.get("/app")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = client.get("/audio")
        assert r.status_code == 200 and r.content == b"\0" * 1000 + b"\1" * 1000 + b"\2" * 1000
        assert r.headers["content-type"] == "audio/pcm"


def test_the_proxy_callback_returns_the_middleware():
    (m,) = middlewares()
    assert m.cls is OpenAIErrors
