"""`cadenza say` as a user runs it (a subprocess): the WAV, the JSON metrics, and bad input
that exits non-zero with one line on stderr and no traceback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

CLI = [sys.executable, "-m", "cadenza.engine.cli"]


def _run(args, stdin: bytes | None = None, exe=None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*(exe or CLI), *map(str, args)], input=stdin, capture_output=True, timeout=timeout,
                          env=env)


def test_say_writes_the_wav(tiny_bundle, tmp_path, engine):
    out = tmp_path / "hello.wav"
    p = _run(["say", "Hello from the command line.", "--bundle", tiny_bundle, "-o", out, "--frames", 7, "--greedy",
              "--threads", 1])
    assert p.returncode == 0, p.stderr.decode()
    assert b"Traceback" not in p.stderr
    assert str(out).encode() in p.stdout and b"wrote" in p.stdout
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (24000, 1, 7 * 1920)
    data, sr = sf.read(str(out), dtype="float32")
    # the same greedy stream in process; the WAV holds it as 16-bit PCM
    want = np.concatenate([c.pcm for c in engine.stream("Hello from the command line.", frames=7, greedy=True)])
    np.testing.assert_allclose(data, np.clip(want, -1, 1 - 2**-15), rtol=0, atol=2 / 32768)


def test_say_json(tiny_bundle, tmp_path):
    out = tmp_path / "j.wav"
    exe = [shutil.which("cadenza")] if shutil.which("cadenza") else None  # the installed console script
    p = _run(["say", "Metrics as JSON.", "--bundle", tiny_bundle, "-o", out, "--seed", 3, "--json", "--threads", 1],
             exe=exe)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    m = json.loads(lines[0])
    assert isinstance(m, dict)
    assert m["ttfa_s"] > 0 and m["rtf"] > 0 and m["seed"] == 3
    assert m["audio_s"] == pytest.approx(sf.info(str(out)).frames / 24000)
    assert m["frames"] * 1920 == sf.info(str(out)).frames


def test_say_reads_utf8_stdin(tiny_bundle, tmp_path):
    out = tmp_path / "stdin.wav"
    p = _run(["say", "-", "--bundle", tiny_bundle, "-o", out, "--frames", 3, "--json", "--threads", 1],
             stdin="Zoë, ça va?".encode())
    assert p.returncode == 0, p.stderr.decode()
    assert sf.info(str(out)).frames == 3 * 1920


BAD = [
    pytest.param(["say", ""], None, "empty", id="empty-text"),
    pytest.param(["say", "   "], None, "empty", id="whitespace-text"),
    pytest.param(["say", "-"], b"caf\xe9 \xff\xfe", "UTF-8", id="invalid-utf8-stdin"),
    pytest.param(["say", "Hello.", "--backend", "nope"], None, "backend", id="unknown-backend"),
    pytest.param(["say", "Hello.", "--top-p", "0"], None, "top_p", id="top-p-0"),
    pytest.param(["say", "Hello.", "--temperature", "-1"], None, "temperature", id="temperature<0"),
    pytest.param(["say", "Hello.", "--frames", "600"], None, "max_len", id="frames>max_len"),
]


@pytest.mark.parametrize("args, stdin, mentions", BAD)
def test_bad_input_is_one_line_on_stderr(args, stdin, mentions, tiny_bundle, tmp_path):
    out = tmp_path / "never.wav"
    p = _run([*args, "--bundle", tiny_bundle, "-o", out, "--threads", 1], stdin=stdin)
    _assert_one_line_error(p, mentions)
    assert not out.exists()


def test_missing_bundle_is_one_line_on_stderr(tmp_path):
    out = tmp_path / "never.wav"
    p = _run(["say", "Hello.", "--bundle", tmp_path / "no-such-bundle", "-o", out])
    _assert_one_line_error(p, "cadenza export")
    assert not out.exists()


def _assert_one_line_error(p: subprocess.CompletedProcess, mentions: str) -> None:
    err = p.stderr.decode()
    assert p.returncode != 0
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("cadenza say: error:") and mentions in lines[0], lines[0]
    assert p.stdout.strip() == b""


@pytest.mark.parametrize("where", ["missing-dir", "a-directory", "unknown-extension"])
def test_unwritable_output_is_one_line_on_stderr(where, tiny_bundle, tmp_path):
    out = {"missing-dir": tmp_path / "no" / "such" / "dir" / "x.wav", "a-directory": tmp_path,
           "unknown-extension": tmp_path / "x.nosuchformat"}[where]
    p = _run(["say", "Hello.", "--bundle", tiny_bundle, "-o", out, "--frames", 2, "--threads", 1])
    _assert_one_line_error(p, str(out))


@pytest.mark.parametrize("value", ["0", "-3"])
def test_export_rejects_bad_codebooks(value, tmp_path):
    p = _run(["export", "--size", "tiny", "--codebooks", value, "--out", tmp_path / "b"])
    err = p.stderr.decode()
    assert p.returncode == 2 and "Traceback" not in err, err
    assert "n_codebooks" in err and not (tmp_path / "b" / "manifest.json").exists()
