"""`cadenza voice add | list | rm` and `cadenza say --voice`, as a user runs them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import soundfile as sf

from audio_samples import voiced
from support import HOP, SR, TEXT


# --- the CLI ------------------------------------------------------------------------------
def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "cadenza.engine.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, input=stdin)

def test_cli_add_list_say_rm(tmp_path, tiny_bundle):
    sf.write(tmp_path / "me.flac", voiced(44100), 44100)
    store = tmp_path / "store"
    r = cli("voice", "add", tmp_path / "me.flac", "--name", "me", "--bundle", tiny_bundle, "--with-prompt",
            "--transcript", "hello", "--store", store)
    assert r.returncode == 0, r.stderr
    assert "added voice 'me'" in r.stdout and "prompt frames" in r.stdout
    r = cli("voice", "add", tmp_path / "me.flac", "--name", "me", "--bundle", tiny_bundle, "--store", store)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "already exists" in r.stderr
    r = cli("voice", "list", "--store", store, "--json")
    [entry] = json.loads(r.stdout)
    assert entry["name"] == "me" and entry["prompt"] and entry["duration_s"] == pytest.approx(3.1, abs=0.03)
    assert "me" in cli("voice", "list", "--store", store).stdout
    r = cli("say", TEXT, "--bundle", tiny_bundle, "--voice", "me", "--store", store, "--frames", "6", "--greedy",
            "-o", tmp_path / "out.wav")
    assert r.returncode == 0, r.stderr
    assert sf.info(str(tmp_path / "out.wav")).frames == 6 * HOP
    assert cli("voice", "rm", "me", "--store", store).returncode == 0
    r = cli("voice", "rm", "me", "--store", store)
    assert r.returncode == 2 and "no voice named 'me'" in r.stderr
    assert "no voices" in cli("voice", "list", "--store", store).stdout

@pytest.mark.parametrize("args,match", [
    pytest.param(["--name", "../evil"], "invalid voice name", id="bad-name"),
    pytest.param(["--name", "x", "--sample", "notes.wav"], "UTF-8 text", id="text-file"),
    pytest.param(["--name", "x", "--sample", "short.wav"], "at least 1 s", id="too-short"),
])
def test_cli_add_errors(tmp_path, tiny_bundle, args, match):
    (tmp_path / "notes.wav").write_text("not audio")
    sf.write(tmp_path / "short.wav", voiced(seconds=0.5), SR)
    sf.write(tmp_path / "ok.wav", voiced(), SR)
    sample = tmp_path / (args.pop(args.index("--sample") + 1) if "--sample" in args else "ok.wav")
    args = [a for a in args if a != "--sample"]
    r = cli("voice", "add", sample, *args, "--bundle", tiny_bundle, "--store", tmp_path / "store")
    assert r.returncode == 2 and match in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
