"""The command line under hostile input: every case one line on stderr, exit status 2, no traceback."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from cadenza.engine.cli import main
from hostile import edit_manifest, rehash


def _outside_entry(d, tmp_path):
    edit_manifest(d, lambda m: m["files"].__setitem__("../sentinel", "0" * 64))


def _absurd(d, tmp_path):
    edit_manifest(d, lambda m: m["constants"].__setitem__("n_codebooks", 10 ** 6))


def _garbage_graph(d, tmp_path):
    (d / "backbone.onnx").write_bytes(b"\x08\x07" + b"\xff" * 64)  # not an ONNX model
    rehash(d)


def _tampered(d, tmp_path):
    with open(d / "depth.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")


BUNDLES = {"outside-entry": _outside_entry, "absurd-constant": _absurd, "garbage-graph": _garbage_graph,
           "tampered": _tampered}


@pytest.fixture
def hostile(tiny_bundle, tmp_path):
    def make(kind: str):
        d = shutil.copytree(tiny_bundle, tmp_path / kind)
        (tmp_path / "sentinel").write_text("secret")
        BUNDLES[kind](d, tmp_path)
        return d

    return make


def run(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and "\x1b" not in err, err
    return err


@pytest.mark.parametrize("kind", list(BUNDLES))
def test_hostile_bundles(hostile, tmp_path, capsys, kind):
    d = hostile(kind)
    run(capsys, "say", "Hi.", "--bundle", d, "-o", tmp_path / "o.wav", "--frames", 2)
    run(capsys, "bundle", "verify", d)


def test_hostile_voices(tiny_bundle, tmp_path, capsys):
    big = tmp_path / "huge.safetensors"
    with open(big, "wb") as f:
        f.truncate(400 << 20)
    (tmp_path / "notes.wav").write_text("not audio")
    out = tmp_path / "o.wav"
    run(capsys, "say", "Hi.", "--bundle", tiny_bundle, "-o", out, "--voice", "/etc/passwd")
    run(capsys, "say", "Hi.", "--bundle", tiny_bundle, "-o", out, "--voice", "../x.safetensors")
    run(capsys, "say", "Hi.", "--bundle", tiny_bundle, "-o", out, "--voice-file", big)
    run(capsys, "say", "Hi.", "--bundle", tiny_bundle, "-o", out, "--voice-file", "/dev/zero")
    for sample in ("/dev/zero", tmp_path / "notes.wav", tmp_path / "missing.wav", tmp_path):
        run(capsys, "voice", "add", sample, "--name", "x", "--bundle", tiny_bundle, "--store", tmp_path / "store")


def test_a_voice_file_with_out_of_range_codes(tiny_bundle, tmp_path, capsys):
    from cadenza.engine.contract.bundle import Bundle
    from cadenza.engine.voices.voice import Voice

    b = Bundle.load(tiny_bundle)
    v = Voice("v", np.zeros(256, np.float32), np.full((4, 3), 10 ** 6, np.int64), "t",
              {"family": b.family, "bundle_hash": b.hash})
    v.save(tmp_path / "v.safetensors")
    run(capsys, "say", "Hi.", "--bundle", tiny_bundle, "-o", tmp_path / "o.wav", "--voice-file", tmp_path / "v.safetensors")
