"""The engine core never imports the server: with starlette, uvicorn, prometheus_client, fastapi and
websockets blocked, the engine streams and the `cadenza` command builds its parser."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = ("starlette", "uvicorn", "prometheus_client", "fastapi", "websockets", "multipart", "anyio")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the engine must not need it")
            return None

    sys.meta_path.insert(0, Block())
    from cadenza.engine import Engine
    from cadenza.engine.cli import build_parser, main

    build_parser()
    with Engine.load(sys.argv[1], threads=1) as engine:
        assert len(engine.stream(iter(["Hello ", "there."]), seed=0).read_all()) > 0
    assert main(["serve", "--bundle", sys.argv[1]]) == 2  # a one-line error: the extra is missing
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
""")


def test_engine_and_cli_do_not_need_the_server_extra(tiny_bundle):
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_bundle)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert b"needs the server extra" in p.stderr
