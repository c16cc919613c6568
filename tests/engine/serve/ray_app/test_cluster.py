"""Two replicas of `tiny` on a local Ray cluster, through Ray Serve's HTTP proxy: real processes, real HTTP.

One cluster for the module (`cadenza serve --ray`, see conftest.py); the tests run in this
order and the last one shuts the cluster down. Audio is compared with an engine in this
process (same bundle, same seed, one thread) to 1 LSB, as the single-server tests do.
"""
from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from audio_samples import voiced, wav_bytes
from serve_support import assert_pcm_matches, expected_pcm16
from support import wait_for

pytestmark = pytest.mark.slow  # one real Ray cluster for the module: about a minute and a half

TEXT = "Hello there, this is Cadenza on Ray Serve."
LONG = "This sentence is spoken again and again, to keep the stream going for a while. " * 6
SEEN_REPLICAS: set[str] = set()  # every replica id that answered in this module


@dataclass
class Speech:
    """One streamed request as the client saw it."""

    body: dict
    status: int | None = None
    replica: str | None = None
    headers: dict = field(default_factory=dict)
    data: bytes = b""
    error: BaseException | None = None
    started: threading.Event = field(default_factory=threading.Event)  # the first audio bytes came

    @property
    def pcm(self) -> np.ndarray:
        return np.frombuffer(self.data, "<i2")


def _body(text=TEXT, seed=0, **kw) -> dict:
    return {"model": "tiny", "input": text, "voice": "default", "response_format": "pcm", "seed": seed, **kw}


async def _speak(client: httpx.AsyncClient, url: str, s: Speech) -> None:
    try:
        async with client.stream("POST", url + "/v1/audio/speech", json=s.body) as r:
            s.status, s.replica, s.headers = r.status_code, r.headers.get("x-cadenza-replica"), dict(r.headers)
            async for piece in r.aiter_raw():
                s.data += piece
                s.started.set()
    except httpx.HTTPError as e:  # an incomplete body, a reset: recorded, the test decides
        s.error = e
    finally:
        s.started.set()
        if s.replica:
            SEEN_REPLICAS.add(s.replica)


def speak_all(ray_serve, bodies: list[dict | Speech], timeout: float = 120) -> list[Speech]:
    """Send every body at once (one connection each); wait for all of them. Pass `Speech` records to
    watch them from another thread while they run."""
    out = [b if isinstance(b, Speech) else Speech(b) for b in bodies]

    async def main():
        async with httpx.AsyncClient(timeout=timeout, headers=ray_serve.headers,
                                     limits=httpx.Limits(max_connections=len(bodies) + 1)) as client:
            await asyncio.wait_for(asyncio.gather(*[_speak(client, ray_serve.url, s) for s in out]), timeout)

    asyncio.run(main())
    return out


def _check_audio(s: Speech, reference, text=TEXT, **sampling) -> None:
    assert s.status == 200 and s.error is None, (s.status, s.error, s.data[:300])
    assert_pcm_matches(s.pcm, expected_pcm16(reference, text, seed=s.body["seed"], **sampling))


# --- serving ------------------------------------------------------------------------------
def test_concurrent_streams_through_the_proxy_equal_the_engine(ray_serve, reference):
    n = 2 * ray_serve.max_streams + 4  # more than both replicas' slots: both serve, some wait in the proxy's queue
    results = speak_all(ray_serve, [_body(seed=i) for i in range(n)])
    for s in results:
        _check_audio(s, reference)
        assert s.headers["content-type"] == "audio/pcm" and "content-length" not in s.headers  # streamed
    assert len({s.replica for s in results}) == 2


def test_openai_sdk_streams_through_the_proxy(ray_serve, reference):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=ray_serve.url + "/v1", api_key="ray-test-key", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
            model="tiny", voice="default", input=TEXT, response_format="pcm", extra_body={"seed": 42}) as resp:
        got = np.frombuffer(b"".join(resp.iter_bytes()), "<i2")
    assert_pcm_matches(got, expected_pcm16(reference, TEXT, seed=42))


def test_websocket_through_the_proxy(ray_serve, reference):
    websockets = pytest.importorskip("websockets")
    from cadenza.engine.runtime.text_feed import FeedRules

    text = "Hello there, my good friend. How are you doing today?"

    async def speak():
        url = ray_serve.url.replace("http://", "ws://") + "/v1/audio/speech/ws"
        async with websockets.connect(url, additional_headers=ray_serve.headers, max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send(json.dumps({"type": "session.update", "model": "tiny", "seed": 4, "text_wait_ms": None}))
            assert json.loads(await ws.recv())["type"] == "session.updated"
            for piece in ("Hello there, my go", "od friend. How are", " you doing today?"):
                await ws.send(json.dumps({"type": "text.delta", "delta": piece}))
            await ws.send(json.dumps({"type": "text.done"}))
            audio = bytearray()
            while isinstance(msg := await asyncio.wait_for(ws.recv(), 60), bytes):
                audio += msg
            return bytes(audio), json.loads(msg)

    audio, done = asyncio.run(speak())
    assert done["type"] == "audio.done"
    pcm = reference.stream(iter([text]), seed=4, feed_rules=FeedRules(wait_s=None)).read_all()
    assert_pcm_matches(np.frombuffer(audio, "<i2"), (np.clip(pcm, -1, 1) * 32767).round().astype(np.int16))


def test_a_voice_added_through_one_replica_speaks_on_every_replica(ray_serve, reference):
    """The replicas share one voice store directory: an upload on one is a file every replica reads."""
    sample = wav_bytes(voiced(24_000, 4.0), 24_000).getvalue()
    r = httpx.post(ray_serve.url + "/v1/voices", headers=ray_serve.headers, timeout=60,
                   data={"model": "tiny", "name": "carol"}, files={"sample": ("s.wav", sample, "audio/wav")})
    assert r.status_code == 201, r.text
    served_by = set()
    for round_ in range(6):  # until both replicas have spoken with it
        results = speak_all(ray_serve, [_body(seed=100 + round_ * 10 + i, voice="carol") for i in range(8)])
        for s in results:
            _check_audio(s, reference, voice="carol")
        served_by |= {s.replica for s in results}
        if len(served_by) == 2:
            break
    assert len(served_by) == 2, served_by
    listed = httpx.get(ray_serve.url + "/v1/voices", headers=ray_serve.headers).json()["data"]
    assert "carol" in {v["id"] for v in listed}
    assert httpx.delete(ray_serve.url + "/v1/voices/carol", headers=ray_serve.headers).status_code == 200
    gone = speak_all(ray_serve, [_body(seed=i, voice="carol") for i in range(6)])
    assert {s.status for s in gone} == {404}  # on whichever replica
    assert {s.headers.get("content-type") for s in gone} == {"application/json"}


def test_errors_keep_openai_shape_and_a_full_deployment_answers_429(ray_serve):
    r = httpx.post(ray_serve.url + "/v1/audio/speech", json=_body())  # no key
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(ray_serve.url + "/v1/audio/speech", json=_body(model="tts-1"), headers=ray_serve.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # 2 replicas x max_streams ongoing + max_queue waiting in the proxy; the rest is refused by Ray's proxy
    n = 2 * ray_serve.max_streams + ray_serve.max_queue + 24
    results = speak_all(ray_serve, [_body(LONG, seed=i) for i in range(n)])
    assert {s.status for s in results} == {200, 429}, [(s.status, s.error) for s in results]
    busy = [s for s in results if s.status == 429]
    for s in busy:
        err = json.loads(s.data)["error"]
        assert err["code"] == "engine_busy" and err["type"] == "rate_limit_error", err
        assert s.headers["retry-after"] == "1" and s.headers["content-type"] == "application/json"
    assert all(s.error is None and len(s.data) > 24_000 * 2 for s in results if s.status == 200)


def test_metrics_per_replica_and_summed_in_rays_export(ray_serve):
    r = httpx.get(ray_serve.url + "/metrics")
    assert r.status_code == 200 and "cadenza_ttfa_seconds_bucket" in r.text
    assert r.headers["x-cadenza-replica"] in SEEN_REPLICAS  # one replica's own registry
    ray = ray_serve.attach()
    port = ray.nodes()[0]["MetricsExportPort"]

    def exported() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return ""

    def both_replicas() -> bool:
        lines = [s for s in exported().splitlines() if s.startswith("ray_cadenza_streams_total{")]
        return {rep for rep in SEEN_REPLICAS if any(f'replica="{rep}"' in s for s in lines)} == SEEN_REPLICAS

    assert wait_for(both_replicas, timeout=60, interval=1.0), exported()[-3000:]
    text = exported()
    assert "ray_cadenza_ttfa_seconds_bucket{" in text and "ray_cadenza_audio_seconds_total{" in text


def test_the_soak_load_test_through_the_proxy_counts_requests_per_replica(ray_serve):
    from cadenza.benchmarks import soak

    r = asyncio.run(soak.over_http(ray_serve.url, clients=6, seconds=3.0, headers=ray_serve.headers))
    assert r["requests_ok"] >= 6 and not r["errors"], r["errors"]
    assert sum(r["requests_per_replica"].values()) == r["requests_ok"] and len(r["requests_per_replica"]) <= 2
    assert 1 <= len(r["server_rss_mib"]) <= 2 and all(v["max"] > 10 for v in r["server_rss_mib"].values())


# --- failure --------------------------------------------------------------------------------
def _replica_actor(ray, replica_id: str) -> str:
    """The actor name of the replica whose `X-Cadenza-Replica` is `replica_id` (namespace `serve`)."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "serve"]
    (name,) = [n for n in names if n.startswith("SERVE_REPLICA::") and n.endswith(f"#{replica_id}")]
    return name


def test_killing_a_replica_mid_load_leaves_the_endpoint_serving(ray_serve, reference):
    ray = ray_serve.attach()
    from ray import serve

    load = [Speech(_body(LONG, seed=500 + i)) for i in range(2 * ray_serve.max_streams)]
    runner = threading.Thread(target=speak_all, args=(ray_serve, load), kwargs={"timeout": 180})
    runner.start()
    assert wait_for(lambda: all(s.started.is_set() for s in load), timeout=60, interval=0.05)
    victim = load[0].replica
    ray.kill(ray.get_actor(_replica_actor(ray, victim), namespace="serve"), no_restart=True)
    runner.join(150)
    assert not runner.is_alive(), "a request hung after its replica was killed"
    on_victim = [s for s in load if s.replica == victim]
    assert on_victim and len(on_victim) < len(load)
    for s in on_victim:  # cut off: the client sees an error (an incomplete chunked body), not a short file
        assert s.error is not None or s.status != 200, (s.status, len(s.data))
    for s in load:
        if s.replica != victim:
            _check_audio(s, reference, LONG)

    def replaced() -> bool:
        dep = serve.status().applications["cadenza"].deployments["cadenza"]
        return dep.replica_states.get("RUNNING", 0) == 2

    assert wait_for(replaced, timeout=120, interval=0.5)
    survivors = {s.replica for s in load} - {victim}
    served_by: set = set()
    for round_ in range(20):  # the proxy learns of the replacement shortly after the controller
        after = speak_all(ray_serve, [_body(seed=700 + i) for i in range(2 * ray_serve.max_streams + 2)])
        for s in after:
            _check_audio(s, reference)
        served_by |= {s.replica for s in after}
        if served_by - survivors:
            break
    assert victim not in served_by and served_by - survivors, (victim, survivors, served_by)


# --- shutdown -------------------------------------------------------------------------------
def test_sigterm_shuts_the_cluster_down_and_leaves_no_process(ray_serve):
    assert ray_serve.pids()
    assert ray_serve.stop() == 0
    assert wait_for(lambda: not ray_serve.pids(), timeout=30, interval=0.2), ray_serve.pids()
    with pytest.raises(httpx.TransportError):
        httpx.get(ray_serve.url + "/health", timeout=5)
