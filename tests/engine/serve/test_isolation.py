"""What must work without an optional extra.

The engine core never imports the server: with starlette, uvicorn, prometheus_client, fastapi and
websockets blocked, the engine streams and the `cadenza` command builds its parser. The engine, the
app factory and `cadenza serve` (without `--ray`) never import ray: with ray blocked, they serve.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap

import httpx

from support import wait_for

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = tuple(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: this path must not need it", name=name.split(".")[0])
            return None

    sys.meta_path.insert(0, Block())
    sys.argv = sys.argv[1:]

    def leaked():
        return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
""")

NO_SERVER = BLOCKER + textwrap.dedent("""
    from cadenza.engine import Engine
    from cadenza.engine.cli import build_parser, main

    build_parser()
    with Engine.load(sys.argv[1], threads=1) as engine:
        assert len(engine.stream(iter(["Hello ", "there."]), seed=0).read_all()) > 0
    assert main(["serve", "--bundle", sys.argv[1]]) == 2  # a one-line error: the extra is missing
    assert not leaked(), leaked()
""")

SERVER_WITHOUT_RAY = BLOCKER + textwrap.dedent("""
    from starlette.testclient import TestClient

    from cadenza.engine import Engine
    from cadenza.engine.cli import main
    from cadenza.engine.serve import create_app

    with Engine.load(sys.argv[1], threads=1) as engine, TestClient(create_app({"tiny": engine})) as client:
        r = client.post("/v1/audio/speech", json={"model": "tiny", "input": "Hello there.", "response_format": "pcm"})
        assert r.status_code == 200 and len(r.content) > 0
    assert main(["serve", "--ray", "--bundle", sys.argv[1]]) == 2  # a one-line error: the extra is missing
    assert not leaked(), leaked()
""")

CLI_WITHOUT_RAY = BLOCKER + textwrap.dedent("""
    import atexit
    from cadenza.engine.cli import main

    atexit.register(lambda: print("leaked:", leaked(), file=sys.stderr))
    sys.exit(main(sys.argv[1:]))
""")


def test_engine_and_cli_do_not_need_the_server_extra(tiny_bundle):
    blocked = "starlette,uvicorn,prometheus_client,fastapi,websockets,multipart,anyio"
    p = subprocess.run([sys.executable, "-c", NO_SERVER, blocked, str(tiny_bundle)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert b"needs the server extra" in p.stderr


def test_engine_app_factory_and_cli_do_not_need_ray(tiny_bundle):
    p = subprocess.run([sys.executable, "-c", SERVER_WITHOUT_RAY, "ray", str(tiny_bundle)], capture_output=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert b"needs the ray extra (ray is missing)" in p.stderr


def test_cadenza_serve_without_ray_serves_with_ray_blocked(tiny_bundle, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-c", CLI_WITHOUT_RAY, "ray", "serve", "--bundle", f"tiny={tiny_bundle}",
           "--port", str(port), "--threads", "1", "--voice-store", str(tmp_path), "--log-level", "warning"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            try:
                return httpx.get(url + "/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return p.poll() is not None

        assert wait_for(ready, timeout=60, interval=0.1) and p.poll() is None, p.communicate()[1].decode()[-3000:]
        r = httpx.post(url + "/v1/audio/speech", timeout=60,
                       json={"model": "tiny", "input": "Hello there.", "response_format": "pcm", "seed": 0})
        assert r.status_code == 200 and len(r.content) > 0
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err.decode()[-3000:]
        assert b"leaked: []" in err, err.decode()[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
