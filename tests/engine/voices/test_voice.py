"""`Voice`: names and the safetensors file format (round trip, corruption, foreign files, versions)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cadenza.engine.errors import VoiceError
from cadenza.engine.voices.store import VoiceStore
from cadenza.engine.voices.voice import FORMAT_VERSION, META_KEY, Voice, check_name
from support import E, make_voice


# --- names and files ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "x" * 65, "", "-x", "a b", "é",
                                  "x.safetensors", "..", None])
def test_bad_names(name, tmp_path):
    with pytest.raises(VoiceError, match="invalid voice name"):
        check_name(name)
    with pytest.raises(VoiceError, match="invalid voice name"):
        VoiceStore(tmp_path).get(name)
    assert list(tmp_path.iterdir()) == []

@pytest.mark.parametrize("name", ["a", "Alice_2.v-1", "x" * 64, "0"])
def test_good_names(name):
    assert check_name(name) == name

@pytest.mark.parametrize("prompt", [None, np.arange(4 * 30).reshape(4, 30) % 64], ids=["no-prompt", "prompt"])
def test_save_load_roundtrip(tmp_path, bundle, prompt):
    v = make_voice(bundle, "Zoe", 0.5, prompt, created="2026-01-01T00:00:00Z", note="ça va")
    v.transcript = "Zoë: ça va?" if prompt is not None else None
    w = Voice.load(v.save(tmp_path / "v.safetensors"))
    assert (w.name, w.transcript, w.meta) == (v.name, v.transcript, v.meta)
    assert w.embedding.dtype == np.float32 and np.array_equal(w.embedding, v.embedding)
    if prompt is None:
        assert w.prompt_codes is None
    else:
        assert w.prompt_codes.dtype == np.int64 and np.array_equal(w.prompt_codes, prompt)
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors"]  # no temp file left

def _damage(kind: str, data: bytes) -> bytes:
    if kind == "flipped-byte":
        return data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:]
    cut = {"half": len(data) // 2, "header-only": 8 + int.from_bytes(data[:8], "little"), "7-bytes": 7,
           "empty": 0, "one-short": len(data) - 1}[kind]
    return data[:cut]

@pytest.mark.parametrize("kind", ["half", "header-only", "7-bytes", "empty", "one-short", "flipped-byte"])
def test_corrupt_file_is_refused(tmp_path, bundle, kind):
    p = make_voice(bundle, prompt=np.zeros((4, 10), np.int64)).save(tmp_path / "v.safetensors")
    p.write_bytes(_damage(kind, p.read_bytes()))
    with pytest.raises(VoiceError, match="voice add"):
        Voice.load(p)

def test_foreign_safetensors_and_versions(tmp_path, bundle):
    from safetensors.numpy import save_file

    save_file({"embedding": np.zeros(E, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(VoiceError, match="not a valid voice file"):
        Voice.load(tmp_path / "plain.safetensors")
    header = {"format": "cadenza-voice", "format_version": FORMAT_VERSION + 1}
    save_file({"embedding": np.zeros(E, np.float32)}, str(tmp_path / "new.safetensors"),
              metadata={META_KEY: json.dumps(header)})
    with pytest.raises(VoiceError, match="voice format 2"):
        Voice.load(tmp_path / "new.safetensors")
    with pytest.raises(VoiceError, match="no voice file"):
        Voice.load(tmp_path / "missing.safetensors")
