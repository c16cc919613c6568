"""Voices are input too: a voice argument is a stored name (never a path), files are capped and must be
regular files, audio is refused from its header before it is decoded, metadata and codes are checked.

Peak memory of the hostile audio and voice cases is measured in a fresh interpreter under an address
space limit: a case that decoded or read what it should refuse dies of MemoryError instead of
answering with a VoiceError.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from cadenza.engine.errors import KVCacheExhausted, VoiceError
from cadenza.engine.voices.store import VoiceStore
from hostile import opened_files
from support import TEXT, make_voice


@pytest.mark.parametrize("name", ["/dev/zero", "../x.safetensors", "/etc/passwd", "a/../../b", "x.safetensors"])
def test_a_string_is_a_name_never_a_path(engine, tmp_path, name):
    with opened_files() as opened, pytest.raises(VoiceError, match="invalid voice name"):
        engine.stream(TEXT, voice=name)
    assert not [p for p, _ in opened if "dev/zero" in p or "passwd" in p or "x.safetensors" in p]


def test_a_path_must_be_a_small_regular_file(engine, tmp_path):
    from pathlib import Path

    with pytest.raises(VoiceError, match="not a regular file"):
        engine.stream(TEXT, voice=Path("/dev/zero"))
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.truncate(400 << 20)  # sparse: 400 MB on paper
    with pytest.raises(VoiceError, match="over 8 MiB"):
        engine.stream(TEXT, voice=big)


def test_the_name_inside_a_file_must_be_its_file_name(tmp_path, bundle):
    store = VoiceStore(tmp_path)
    make_voice(bundle, "real").save(tmp_path / "alias.safetensors")
    with pytest.raises(VoiceError, match="holds a voice named 'real'"):
        store.get("alias")
    [entry] = store.list()
    assert entry["name"] == "alias" and "error" in entry
    store.remove("alias")  # what `list` shows, `rm` removes
    assert store.list() == []


@pytest.mark.parametrize("codes,match", [
    (np.full((4, 5), -1, np.int64), "negative"),
    (np.full((4, 5), 64, np.int64), "do not fit this bundle"),
    (np.zeros((3, 5), np.int64), "do not fit this bundle"),
    (np.zeros((4, 1000), np.int64), "do not fit this bundle"),
])
def test_prompt_codes_are_checked(tmp_path, bundle, codes, match):
    store = VoiceStore(tmp_path)
    with pytest.raises(VoiceError, match=match):
        store.add(make_voice(bundle, "v", prompt=codes))
        store.resolve("v", bundle)


def test_a_prompt_that_fills_the_slot_says_so(make_engine, bundle):
    e = make_engine(max_len=64)
    v = make_voice(bundle, "long", prompt=np.zeros((4, 60), np.int64))
    with pytest.raises(KVCacheExhausted, match="voice's prompt takes"):
        e.stream(TEXT, voice=v)


def test_voice_list_prints_no_terminal_escapes(tmp_path, bundle, capsys):
    from cadenza.engine.cli import main

    v = make_voice(bundle, "v", created="\x1b]0;pwned\x07\x1b[31mred")
    v.save(tmp_path / "v.safetensors")
    (tmp_path / "\x1b[2Jx.safetensors").write_bytes(b"junk")
    assert main(["voice", "list", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "pwned" in out


def _silent_flac(channels: int, rate: int, seconds: float) -> bytes:
    b = io.BytesIO()
    with sf.SoundFile(b, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((rate, channels), np.int16)
        for _ in range(int(seconds)):
            f.write(block)
    return b.getvalue()


PROBE = textwrap.dedent("""
    import resource, sys, json
    resource.setrlimit(resource.RLIMIT_AS, (__LIMIT__, __LIMIT__))
    from pathlib import Path
    from cadenza.engine.errors import VoiceError
    kind, path = sys.argv[1], sys.argv[2]
    try:
        if kind == "audio":
            from cadenza.engine.voices.audio import load_audio
            load_audio(path, 24000)
        else:
            from cadenza.engine.voices.voice import Voice
            Voice.load(Path(path))
        result = "accepted"
    except VoiceError as e:
        result = "VoiceError: " + str(e)[:200]
    except MemoryError:
        result = "MemoryError"
    # VmHWM: this process's own peak (ru_maxrss would keep the forking parent's across exec)
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"result": result, "peak_kib": hwm}))
""")


def probe(kind: str, path, limit_gib: float = 1.5) -> dict:
    code = PROBE.replace("__LIMIT__", str(int(limit_gib * 2 ** 30)))
    p = subprocess.run([sys.executable, "-c", code, kind, str(path)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-1500:]
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def _flac_file(d):
    data = _silent_flac(8, 192_000, 230)
    assert len(data) < 1 << 20  # a small file (silence compresses) that would decode to 1.4 GB of float32
    (d / "many.flac").write_bytes(data)
    return d / "many.flac"


def _sparse_voice_file(d):
    with open(d / "huge.safetensors", "wb") as f:
        f.truncate(400 << 20)
    return d / "huge.safetensors"


@pytest.mark.parametrize("make,kind", [
    pytest.param(_flac_file, "audio", id="flac-8ch-192kHz-230s"),
    pytest.param(lambda d: "/dev/zero", "audio", id="dev-zero-audio"),
    pytest.param(_sparse_voice_file, "voice", id="400MB-voice-file"),
])
def test_hostile_audio_and_voice_files_stay_small(tmp_path, make, kind):
    r = probe(kind, make(tmp_path))
    assert r["result"].startswith("VoiceError"), r
    assert r["peak_kib"] < 400 << 10, r  # well under the 1.5 GiB address-space limit it ran under
