"""POST /v1/audio/speech with the official openai SDK and httpx: the bytes are the engine's audio."""
from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from serve_support import TEXT, assert_pcm_matches, decode, expected_pcm16, wav_sizes


def _client(server, **kw):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def test_openai_sdk_streams_the_engines_pcm(server):
    client = _client(server)
    with client.audio.speech.with_streaming_response.create(
            model="tiny", voice="default", input=TEXT, response_format="pcm", extra_body={"seed": 7}) as resp:
        assert resp.headers["content-type"] == "audio/pcm"
        parts = list(resp.iter_bytes())
    got = np.frombuffer(b"".join(parts), "<i2")
    assert_pcm_matches(got, expected_pcm16(server.engine, seed=7))


def test_httpx_streams_wav_with_an_open_ended_header(server):
    body = {"model": "tiny", "input": TEXT, "voice": "default", "response_format": "wav", "seed": 3}
    with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        assert "content-length" not in r.headers  # chunked: bytes leave as they are generated
        pieces = list(r.iter_raw())
    data = b"".join(pieces)
    assert wav_sizes(data) == (0xFFFFFFFF, 0xFFFFFFFF)
    x, sr = decode("wav", data)
    assert sr == 24_000
    assert_pcm_matches(x, expected_pcm16(server.engine, seed=3))


@pytest.mark.parametrize("fmt", ["pcm", "wav", "flac", "opus", "mp3"])
def test_every_format_decodes(server, fmt):
    want = expected_pcm16(server.engine, seed=11).astype(np.float32) / 32767
    r = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                   json={"model": "tiny", "input": TEXT, "voice": "default", "response_format": fmt, "seed": 11})
    assert r.status_code == 200, r.text
    x, sr = decode(fmt, r.content, frames=len(want))
    assert sr == 24_000
    x = x.astype(np.float32) / (32767 if x.dtype == np.int16 else 1)
    if fmt in ("pcm", "wav", "flac"):  # lossless at 16 bits
        assert len(x) == len(want) and np.abs(x - want).max() <= 1.5 / 32767
        return
    # lossy: a delay at the start (mp3: the encoder's, ~1100-1700 samples; opus: none after its
    # pre-skip). At the best lag the waveform correlates with the engine's (observed: opus 0.93; mp3
    # 0.58, its 24 kHz low-pass removes much of the random model's broadband noise); an unrelated
    # signal of this length correlates under 0.02
    lag = max(range(0, 2500), key=lambda k: float(np.dot(x[k:k + 12000], want[:12000])))
    n = min(len(x) - lag, len(want))
    assert n >= len(want) - 2500
    corr = np.corrcoef(x[lag:lag + n], want[:n])[0, 1]
    assert corr > 0.4, (fmt, lag, corr)


def test_sse_events_parse_and_carry_the_audio(server):
    body = {"model": "tiny", "input": TEXT, "voice": "default", "response_format": "pcm", "stream_format": "sse",
            "seed": 5}
    with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"} and len(kinds) > 2
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert_pcm_matches(np.frombuffer(audio, "<i2"), expected_pcm16(server.engine, seed=5))
    usage = events[-1]["usage"]
    assert usage["input_tokens"] > len(TEXT) and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_openai_sdk_sse(server):
    client = _client(server)
    with client.audio.speech.with_streaming_response.create(
            model="tiny", voice="default", input="Short one.", response_format="pcm", stream_format="sse",
            extra_body={"seed": 2}) as resp:
        text = resp.read().decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert_pcm_matches(np.frombuffer(audio, "<i2"), expected_pcm16(server.engine, "Short one.", seed=2))


def test_sampling_fields_reach_the_engine(server):
    body = {"model": "tiny", "input": TEXT, "voice": "default", "response_format": "pcm", "seed": 1,
            "temperature": 0.5, "top_k": 5, "top_p": 0.9, "repetition_penalty": 1.2}
    r = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=60)
    want = expected_pcm16(server.engine, seed=1, temperature=0.5, top_k=5, top_p=0.9, repetition_penalty=1.2)
    assert_pcm_matches(np.frombuffer(r.content, "<i2"), want)
    other = httpx.post(server.url + "/v1/audio/speech", json={**body, "temperature": 1.0}, timeout=60)
    assert other.content != r.content  # the field changed the audio: it was not ignored
