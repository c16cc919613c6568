"""A family bundle streams in a fresh interpreter where torch (and the exporter) cannot be imported:
the run time tokenises with the `tokenizers` library and runs only ONNX Runtime."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "snac") or name.startswith("cadenza.export"):
                raise ImportError(f"{name} is blocked")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from cadenza.engine import Engine

    bundle, voice = sys.argv[1], sys.argv[2]
    with Engine.load(bundle, threads=1) as engine:
        s = engine.synthesize("Hello without torch.", voice=voice, greedy=True, frames=3)
    assert s.codes.shape[1] == 3 and np.isfinite(s.pcm).all() and len(s.pcm) == 3 * engine.hop
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "snac"))
    assert not leaked, leaked
    print("ok")
""")


@pytest.mark.parametrize("family,voice", [("orpheus", "tara"), ("csm", "1")])
def test_family_bundle_streams_without_torch(request, family, voice):
    bundle = request.getfixturevalue(f"{family}_bundle")
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), voice], capture_output=True, timeout=180)
    assert p.returncode == 0 and p.stdout.decode().strip() == "ok", p.stderr.decode()[-2000:]
