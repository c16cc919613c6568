"""A real uvicorn server on 127.0.0.1 (a free port, a thread of the test process) over the tiny bundle.

`server` is shared by the module's tests: one engine with 16 slots, no API key, a voice
store of its own. `serve(**create_app kwargs)` starts another (e.g. with a key or one slot);
every server is stopped at teardown. The engine is reachable as `srv.engine` so tests can
compare the audio with `engine.synthesize` and watch `engine.active_streams`.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("uvicorn", reason="the server tests need the [server] extra: pip install -e .[server]")
pytest.importorskip("starlette", reason="the server tests need the [server] extra")


class LiveServer:
    """uvicorn serving `app` on a socket bound to 127.0.0.1:0, in a daemon thread."""

    def __init__(self, app, engine=None):
        import uvicorn

        self.app, self.engine = app, engine
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/audio/speech/ws"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws_max_size=1 << 20)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)

    @property
    def cadenza(self):
        return self.app.state.cadenza

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture(scope="module")
def serve_factory(tiny_bundle, tmp_path_factory):
    """make(engine_kwargs=None, **create_app kwargs) -> LiveServer over its own tiny engine."""
    from cadenza.engine import Engine
    from cadenza.engine.serve.app import create_app

    started, engines = [], []

    def make(engine_kwargs: dict | None = None, **kwargs) -> LiveServer:
        kw = {"threads": 1, "max_streams": 16, "voice_store": tmp_path_factory.mktemp("voices"), **(engine_kwargs or {})}
        engine = Engine.load(tiny_bundle, **kw)
        engines.append(engine)
        srv = LiveServer(create_app({"tiny": engine}, **kwargs), engine)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
    for e in engines:
        e.close()


@pytest.fixture(scope="module")
def server(serve_factory) -> LiveServer:
    return serve_factory()
