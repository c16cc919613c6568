"""`cadenza serve` as a process: bundle names, the key from the environment, SIGTERM drain."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from cadenza.engine.cli import main
from support import wait_for

LONG = "This sentence is spoken again and again, to keep the stream going for a while. " * 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start(tiny_bundle, tmp_path):
    procs = []

    def run(*extra, env=None):
        port = _free_port()
        cmd = [sys.executable, "-m", "cadenza.engine.cli", "serve", "--bundle", f"tiny={tiny_bundle}",
               "--port", str(port), "--threads", "1", "--voice-store", str(tmp_path / "voices"),
               "--log-level", "warning", *extra]
        p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        url = f"http://127.0.0.1:{port}"

        def ready():
            try:
                return httpx.get(url + "/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(ready, timeout=60, interval=0.1), p.stdout.read1().decode() if p.poll() is not None else ""
        return p, url

    yield run
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _speech(url, text=LONG, **kw):
    return {"model": "tiny", "input": text, "voice": "default", "response_format": "pcm", "seed": 0, **kw}


def test_sigterm_lets_inflight_streams_finish_and_refuses_new_ones(start):
    p, url = start("--drain-timeout", "60", "--api-key-env", "CADENZA_TEST_KEY", env={"CADENZA_TEST_KEY": "k"})
    auth = {"Authorization": "Bearer k"}
    assert httpx.get(url + "/v1/models", headers=auth).json()["data"][0]["id"] == "tiny"
    with httpx.stream("POST", url + "/v1/audio/speech", json=_speech(url), headers=auth, timeout=120) as r:
        it = r.iter_raw()
        data = next(it)  # in flight
        p.send_signal(signal.SIGTERM)
        assert wait_for(lambda: httpx.get(url + "/ready", timeout=5).status_code == 503, timeout=5)
        refused = httpx.post(url + "/v1/audio/speech", json=_speech(url, "New."), headers=auth, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
        data += b"".join(it)  # the in-flight stream runs to its end
    assert len(data) > 10 * 24_000 * 2  # over 10 s of audio, complete (no error while reading)
    assert p.wait(30) == 0


def test_the_drain_deadline_cancels_what_is_left(start):
    p, url = start("--drain-timeout", "0.5")
    with httpx.stream("POST", url + "/v1/audio/speech", json=_speech(url), timeout=120) as r:
        it = r.iter_raw()
        next(it)
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        with pytest.raises(httpx.TransportError):  # cut mid-body: the client sees an incomplete response
            for _ in it:
                time.sleep(0.05)  # a slow reader: the stream is still in flight at the deadline
    assert p.wait(30) == 0
    assert time.monotonic() - t < 20


def test_cli_errors_are_one_line(tiny_bundle, tmp_path, capsys):
    assert main(["serve", "--bundle", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["serve", "--bundle", f"a={tiny_bundle}", "--bundle", f"a={tiny_bundle}"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["serve", "--bundle", str(tiny_bundle), "--api-key-env", "CADENZA_UNSET_VAR_X"]) == 2
    assert "empty or unset" in capsys.readouterr().err
    assert main(["serve", "--bundle", str(tiny_bundle), "--replicas", "2", "--address", "auto"]) == 2
    assert "--replicas, --address need --ray" in capsys.readouterr().err
