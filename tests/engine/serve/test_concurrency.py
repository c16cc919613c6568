"""Many clients at once, the limits (429 with Retry-After), and clients that leave mid-stream."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import numpy as np

from serve_support import assert_pcm_matches, expected_pcm16
from support import wait_for

TEXTS = [f"Client number {i} says hello, and then a little more." for i in range(16)]


def _body(i, **kw):
    return {"model": "tiny", "input": TEXTS[i], "voice": "default", "response_format": "pcm", "seed": i, **kw}


async def _fetch(client, url, body):
    async with client.stream("POST", url + "/v1/audio/speech", json=body) as r:
        return r.status_code, dict(r.headers), await r.aread()


def test_sixteen_clients_at_once_each_get_their_own_audio(server):
    async def run():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=32)) as client:
            return await asyncio.gather(*[_fetch(client, server.url, _body(i)) for i in range(16)])

    peak = []
    results = asyncio.run(_with_monitor(run, server.engine, peak))
    assert [status for status, _, _ in results] == [200] * 16
    assert peak[0] >= 8, f"the streams never overlapped (peak {peak[0]} active)"
    for i, (_, _, data) in enumerate(results):
        assert_pcm_matches(np.frombuffer(data, "<i2"), expected_pcm16(server.engine, TEXTS[i], seed=i))
    assert server.engine.active_streams == 0


async def _with_monitor(run, engine, peak):
    peak.append(0)

    async def watch():
        while True:
            peak[0] = max(peak[0], engine.active_streams)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(watch())
    try:
        return await run()
    finally:
        task.cancel()


def test_over_the_limit_is_429_and_the_rest_is_served(serve_factory):
    srv = serve_factory(engine_kwargs=dict(max_streams=2, max_queue=1))  # 2 running + 1 waiting

    async def run():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*[_fetch(client, srv.url, _body(i, input=TEXTS[i] * 3)) for i in range(8)])

    results = asyncio.run(run())
    statuses = sorted(s for s, _, _ in results)
    assert statuses.count(429) >= 1 and statuses.count(200) >= 3, statuses
    for status, headers, data in results:
        if status == 429:
            assert headers["retry-after"] == "1"
            err = json.loads(data)["error"]
            assert err["code"] == "engine_busy" and err["type"] == "rate_limit_error" and "max_streams" in err["message"]
        else:
            assert status == 200 and len(data) > 0
    ok = [(i, d) for i, (s, _, d) in enumerate(results) if s == 200]
    for i, data in ok:  # the admitted ones are complete and correct
        assert_pcm_matches(np.frombuffer(data, "<i2"), expected_pcm16(srv.engine, TEXTS[i] * 3, seed=i))
    assert wait_for(lambda: srv.engine.active_streams == 0)
    r = httpx.post(srv.url + "/v1/audio/speech", json=_body(0), timeout=60)  # and it still serves
    assert r.status_code == 200


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    """A raw socket reads the first audio bytes, then closes: the slot is free within 200 ms."""
    body = httpx.Request("POST", server.url + "/v1/audio/speech", json=_body(0, input="Long text, " * 60)).read()
    head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head + body)
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200")
        assert server.engine.active_streams == 1
        t = time.perf_counter()
    assert wait_for(lambda: server.engine.active_streams == 0, timeout=0.2), \
        f"still {server.engine.active_streams} active {time.perf_counter() - t:.3f} s after the disconnect"
    assert not server.cadenza.live.__len__() or wait_for(lambda: len(server.cadenza.live) == 0, timeout=1)
