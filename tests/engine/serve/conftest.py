"""A real uvicorn server on 127.0.0.1 (a free port, a thread of the test process) over the tiny bundle.

`server` is shared by the module's tests: one engine with 16 slots, no API key, a voice
store of its own. `serve_factory(engine_kwargs=..., **create_app kwargs)` starts another (e.g.
with a key or two slots); every server is stopped at teardown. The engine is reachable as `srv.engine` so tests can
compare the audio with `engine.synthesize` and watch `engine.active_streams`.
"""
from __future__ import annotations

import pytest

pytest.importorskip("uvicorn", reason="the server tests need the [server] extra: pip install -e .[server]")
pytest.importorskip("starlette", reason="the server tests need the [server] extra")

from serve_support import LiveServer  # noqa: E402


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
