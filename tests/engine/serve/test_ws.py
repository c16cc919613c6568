"""WebSocket /v1/audio/speech/ws with the `websockets` client: incremental text, cancel, errors."""
from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

from cadenza.engine.runtime.text_feed import FeedRules
from serve_support import assert_pcm_matches, expected_pcm16
from support import wait_for

websockets = pytest.importorskip("websockets")
TEXT = "Hello there, my good friend. How are you doing today? I am fine - thanks for asking."


async def _speak(url, deltas, session=None, headers=None):
    """One utterance: returns (audio bytes, events after session.created)."""
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        if session:
            await ws.send(json.dumps({"type": "session.update", **session}))
            assert json.loads(await ws.recv())["type"] == "session.updated"
        for d in deltas:
            await ws.send(json.dumps({"type": "text.delta", "delta": d}))
        await ws.send(json.dumps({"type": "text.done"}))
        return await _until_done(ws)


async def _until_done(ws):
    audio, events = bytearray(), []
    while True:
        msg = await asyncio.wait_for(ws.recv(), 60)
        if isinstance(msg, bytes):
            audio += msg
            continue
        events.append(json.loads(msg))
        if events[-1]["type"] in ("audio.done", "error"):
            return bytes(audio), events


def _pieces(text, seed):
    rng, out, i = random.Random(seed), [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        out.append(text[i:i + n])
        i += n
    return out


def test_small_deltas_give_the_audio_of_the_whole_text(server):
    session = {"seed": 4, "text_wait_ms": None}  # no timer: segments depend on the text alone
    whole, ev1 = asyncio.run(_speak(server.ws_url, [TEXT], session))
    small, ev2 = asyncio.run(_speak(server.ws_url, _pieces(TEXT, 1), session))
    assert ev1[-1]["type"] == ev2[-1]["type"] == "audio.done"
    assert len(whole) > 0 and small == whole
    # and both are what the engine gives for the same pieces in process
    pcm = server.engine.stream(iter([TEXT]), seed=4, feed_rules=FeedRules(wait_s=None)).read_all()
    want = (np.clip(pcm, -1, 1) * 32767).round().astype(np.int16)
    assert_pcm_matches(np.frombuffer(whole, "<i2"), want)


def test_one_clause_is_exactly_the_http_audio(server):
    text = "Hello there my good friend"
    audio, events = asyncio.run(_speak(server.ws_url, ["Hello", " there my", " good friend"], {"seed": 9}))
    assert events[-1]["type"] == "audio.done" and events[-1]["usage"]["output_tokens"] > 0
    assert_pcm_matches(np.frombuffer(audio, "<i2"), expected_pcm16(server.engine, text, seed=9))


def test_cancel_stops_at_once_and_frees_the_slot(server):
    async def run():
        async with websockets.connect(server.ws_url, max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "text.delta", "delta": "A long text, " * 40}))
            first = await asyncio.wait_for(ws.recv(), 30)
            assert isinstance(first, bytes)  # speaking already, before text.done
            await ws.send(json.dumps({"type": "cancel"}))
            while isinstance(msg := await asyncio.wait_for(ws.recv(), 30), bytes):
                pass
            assert json.loads(msg)["type"] == "audio.cancelled"
            assert wait_for(lambda: server.engine.active_streams == 0, timeout=0.2)
            # the socket goes on: a second utterance
            await ws.send(json.dumps({"type": "text.delta", "delta": "Again."}))
            await ws.send(json.dumps({"type": "text.done"}))
            audio, events = await _until_done(ws)
            assert events[-1]["type"] == "audio.done" and audio

    asyncio.run(run())


def test_bad_messages_get_error_events_and_the_socket_stays(server):
    async def run():
        async with websockets.connect(server.ws_url, max_size=None) as ws:
            await ws.recv()
            errors = []
            for bad in ("not json", json.dumps({"type": "nope"}), json.dumps({"type": "text.done"}),
                        json.dumps({"type": "session.update", "voice": "../../etc/passwd"}),
                        json.dumps({"type": "session.update", "model": "other"}),
                        json.dumps({"type": "text.delta", "delta": 5})):
                await ws.send(bad)
                errors.append(json.loads(await ws.recv()))
            assert [e["type"] for e in errors] == ["error"] * 6
            assert [e["error"]["code"] for e in errors] == ["invalid_json", "invalid_message", "no_utterance",
                                                            "invalid_voice", "model_not_found", "invalid_message"]
            await ws.send(json.dumps({"type": "text.delta", "delta": "Still here."}))
            await ws.send(json.dumps({"type": "text.done"}))
            audio, events = await _until_done(ws)
            assert events[-1]["type"] == "audio.done" and audio

    asyncio.run(run())


def test_disconnect_mid_utterance_frees_the_slot(server):
    async def run():
        ws = await websockets.connect(server.ws_url, max_size=None)
        await ws.recv()
        await ws.send(json.dumps({"type": "text.delta", "delta": "Some words, " * 40}))
        assert isinstance(await asyncio.wait_for(ws.recv(), 30), bytes)
        assert server.engine.active_streams == 1
        await ws.close()

    asyncio.run(run())
    assert wait_for(lambda: server.engine.active_streams == 0 and not server.engine.scheduler.parked, timeout=0.2)
