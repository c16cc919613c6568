"""Voices over HTTP: upload a sample (multipart), list, speak with it, delete; names are names only."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from audio_samples import voiced, wav_bytes
from serve_support import assert_pcm_matches

pytest.importorskip("multipart", reason="uploads need python-multipart (the [server] extra)")


def _upload(server, name, data, **fields):
    return httpx.post(server.url + "/v1/voices", data={"model": "tiny", "name": name, **fields},
                      files={"sample": ("sample.wav", data, "audio/wav")}, timeout=60)


def _ids(server):
    return {v["id"]: v for v in httpx.get(server.url + "/v1/voices").json()["data"]}


def test_upload_list_speak_delete(server):
    sample = wav_bytes(voiced(24_000, 4.0), 24_000).getvalue()
    r = _upload(server, "alice", sample)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "alice" and r.json()["duration_s"] > 3
    listed = _ids(server)
    assert listed["alice"]["kind"] == "stored" and listed["default"]["kind"] == "default"
    body = {"model": "tiny", "input": "Hello there.", "voice": "alice", "response_format": "pcm", "seed": 1}
    got = np.frombuffer(httpx.post(server.url + "/v1/audio/speech", json=body, timeout=60).content, "<i2")
    want = server.engine.synthesize("Hello there.", voice="alice", seed=1).pcm
    assert_pcm_matches(got, (np.clip(want, -1, 1) * 32767).round().astype(np.int16))
    default = httpx.post(server.url + "/v1/audio/speech", json={**body, "voice": "default"}, timeout=60).content
    assert default != got.tobytes()  # the voice changed the audio
    assert _upload(server, "alice", sample).status_code == 409
    assert _upload(server, "alice", sample, replace="true").status_code == 201
    r = httpx.delete(server.url + "/v1/voices/alice")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert "alice" not in _ids(server)
    assert httpx.delete(server.url + "/v1/voices/alice").status_code == 404
    assert httpx.post(server.url + "/v1/audio/speech", json=body, timeout=60).status_code == 404


@pytest.mark.parametrize("name", ["../evil", "/abs", ".hidden", "a/b", "x.safetensors", "", "a" * 65])
def test_hostile_names_are_refused_before_the_filesystem(server, name):
    store = server.engine.voices.store.directory
    before = sorted(p.name for p in store.parent.rglob("*")) if store.parent.exists() else []
    r = _upload(server, name, wav_bytes(voiced(24_000, 4.0), 24_000).getvalue())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_voice_name"
    after = sorted(p.name for p in store.parent.rglob("*")) if store.parent.exists() else []
    assert before == after


@pytest.mark.parametrize("path", ["/v1/voices/..%2F..%2Fetc", "/v1/voices/.env", "/v1/voices/%2Fetc%2Fpasswd"])
def test_hostile_delete_paths(server, path):
    r = httpx.delete(server.url + path)
    assert r.status_code in (400, 404) and "error" in r.json()


def test_bad_samples_and_forms(server):
    noise = (np.random.default_rng(0).standard_normal(24_000 * 4) * 0.3).astype(np.float32)
    r = _upload(server, "noisy", wav_bytes(noise, 24_000).getvalue())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_sample"
    r = _upload(server, "junk", b"this is not audio")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_sample"
    r = httpx.post(server.url + "/v1/voices", json={"name": "x"})
    assert r.status_code == 400
    r = httpx.post(server.url + "/v1/voices", data={"model": "tiny", "name": "nofile"}, files={"other": ("a", b"1")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_sample"


def test_upload_size_cap(serve_factory):
    srv = serve_factory(max_upload_bytes=100_000)
    r = _upload(srv, "big", wav_bytes(voiced(24_000, 4.0), 24_000).getvalue())  # ~190 kB
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
