"""The run time needs no PyTorch: a fresh interpreter where `import torch` (and onnxscript)
fails loads the tiny bundle, streams audio, runs `cadenza say`, and never imports torch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    BLOCKED = ("torch", "onnxscript", "torchaudio", "torchvision")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the run time must not need it")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import torch  # noqa: F401
        raise SystemExit("the import hook did not block torch")
    except ImportError:
        pass

    import numpy as np
    from cadenza.engine import Engine
    from cadenza.engine import cli

    bundle, wav = sys.argv[1], sys.argv[2]
    with Engine.load(bundle, threads=1) as engine:
        s = engine.stream("Hello without torch.", greedy=True)
        pcm = np.concatenate([c.pcm for c in s])
        codes = s.codes
    assert codes.shape[1] > 0 and len(pcm) == codes.shape[1] * engine.hop
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 0
    rc = cli.main(["say", "Said without torch.", "--bundle", bundle, "-o", wav, "--frames", "4", "--json",
                   "--threads", "1"])
    assert rc == 0, rc
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(json.dumps({"codes": codes.tolist()}))
""")


def test_engine_runs_without_torch(tiny_bundle, tmp_path, engine):
    wav = tmp_path / "no_torch.wav"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_bundle), str(wav)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    lines = p.stdout.decode().strip().splitlines()
    assert len(lines) == 2  # the CLI's JSON metrics, then ours
    assert json.loads(lines[0])["frames"] == 4
    codes = np.array(json.loads(lines[1])["codes"])
    s = engine.stream("Hello without torch.", greedy=True)
    list(s)
    np.testing.assert_array_equal(codes, s.codes)  # same bundle, same greedy codes, with or without torch around
    assert wav.stat().st_size > 4 * 1920 * 2


CORE = ("contract", "runtime", "backends/ort", "voices", "cli")

IMPORT_EACH = textwrap.dedent("""
    import importlib, importlib.abc, sys

    BLOCKED = ("torch", "onnxscript", "cadenza.export")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or name.startswith("cadenza.export"):
                raise ImportError(f"{name} is blocked")
            return None

    sys.meta_path.insert(0, Block())
    for module in sys.argv[1:]:
        importlib.import_module(module)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith("cadenza.export"))
    assert not leaked, leaked
""")


def test_every_runtime_core_module_imports_without_torch_or_the_exporter():
    """Layering: contract, runtime, the ort backend, voices and the CLI import neither torch nor
    cadenza.export at module level (only backends/torch and the export command may, lazily)."""
    from pathlib import Path

    import cadenza.engine as pkg

    root = Path(pkg.__file__).parent
    modules = ["cadenza.engine", "cadenza.engine.api", "cadenza.engine.errors", "cadenza.engine.backends"]
    for folder in CORE:
        for f in sorted((root / folder).glob("*.py")):
            name = ".".join(("cadenza.engine", *folder.split("/"), f.stem)).removesuffix(".__init__")
            if f.stem != "__main__":
                modules.append(name)
    assert len(modules) > 25
    p = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
