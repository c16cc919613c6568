"""Every refusal has its status and an OpenAI error body, and the server stays up after each."""
from __future__ import annotations

import json

import httpx
import pytest

websockets = pytest.importorskip("websockets")
OK = {"model": "tiny", "input": "Hello.", "voice": "default", "response_format": "pcm", "seed": 0}


def _post(url, body=None, content=None, headers=None):
    return httpx.post(url + "/v1/audio/speech", json=body, content=content, headers=headers, timeout=60)


def _error(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture(scope="module")
def keyed(serve_factory):
    return serve_factory(api_key="s3cret-key")


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"},
                                     {"Authorization": "Bearer s3cret-key-and-more"}])
def test_missing_or_wrong_key_is_401(keyed, headers):
    _error(_post(keyed.url, OK, headers=headers), 401, "invalid_api_key")
    assert httpx.get(keyed.url + "/v1/models", headers=headers).status_code == 401


def test_the_right_key_passes_and_probes_need_none(keyed):
    r = _post(keyed.url, OK, headers={"Authorization": "Bearer s3cret-key"})
    assert r.status_code == 200 and len(r.content) > 0
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(keyed.url + path).status_code == 200


def test_websocket_needs_the_key_too(keyed):
    async def run(headers):
        async with websockets.connect(keyed.ws_url, additional_headers=headers) as ws:
            return json.loads(await ws.recv())["type"]

    import asyncio

    with pytest.raises(websockets.exceptions.InvalidStatus) as e:
        asyncio.run(run(None))
    assert e.value.response.status_code == 401
    assert asyncio.run(run({"Authorization": "Bearer s3cret-key"})) == "session.created"


@pytest.mark.parametrize("body, status, code", [
    ({**OK, "model": "tts-1"}, 404, "model_not_found"),
    ({**OK, "voice": "nobody"}, 404, "voice_not_found"),
    ({**OK, "voice": "../../etc/passwd"}, 400, "invalid_voice"),
    ({**OK, "voice": "/etc/passwd"}, 400, "invalid_voice"),
    ({**OK, "voice": ".hidden"}, 400, "invalid_voice"),
    ({**OK, "voice": "x.safetensors"}, 400, "invalid_voice"),
    ({**OK, "voice": 3.5}, 400, "invalid_voice"),
    ({**OK, "input": ""}, 400, "invalid_input"),
    ({**OK, "input": "x" * 5000}, 413, "input_too_long"),
    ({**OK, "response_format": "aac"}, 400, "invalid_response_format"),
    ({**OK, "stream_format": "chunks"}, 400, "invalid_stream_format"),
    ({**OK, "speed": 1.5}, 400, "unsupported_speed"),
    ({**OK, "temprature": 0.5}, 400, "unknown_parameter"),
    ({**OK, "seed": "7"}, 400, "invalid_parameter"),
    ({**OK, "top_k": True}, 400, "invalid_parameter"),
    ({**OK, "temperature": -1}, 400, "invalid_sampling"),
    ({k: v for k, v in OK.items() if k != "model"}, 400, "invalid_model"),
    ([1, 2], 400, "invalid_json"),
])
def test_bad_requests(server, body, status, code):
    _error(_post(server.url, body), status, code)


def test_malformed_json_and_huge_bodies(server):
    _error(_post(server.url, content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid_json")
    huge = json.dumps({**OK, "input": "x" * (2 << 20)}).encode()  # over the 1 MiB body limit
    _error(_post(server.url, content=huge, headers={"content-type": "application/json"}), 413, "body_too_large")

    def chunked():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 65536

    _error(_post(server.url, content=chunked(), headers={"content-type": "application/json"}), 413,
           "body_too_large")


def test_unknown_routes_and_methods(server):
    _error(httpx.get(server.url + "/v1/nothing"), 404)
    _error(httpx.get(server.url + "/v1/audio/speech"), 405)


def test_the_server_is_still_up(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    r = _post(server.url, OK)
    assert r.status_code == 200 and len(r.content) > 0
    assert server.engine.active_streams == 0
