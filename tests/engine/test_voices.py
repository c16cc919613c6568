"""Voices: names, the safetensors file format, the store (immutability, atomic replace under
concurrent readers), bundle checks, the encoders' determinism, conditioning, and the CLI.

Tolerances: the same sample gives a bit-identical embedding; the same content rendered at
16 / 44.1 / 48 kHz and resampled to 24 kHz gives an embedding within 1e-5 max-abs of the
24 kHz one (measured: 5e-8) and cosine >= 1 - 1e-6 (measured: 1.0 in float32), while a
different voice differs by > 1e-4 max-abs (measured: 7.6e-4 to 1.8e-3: the tiny random
speaker encoder maps every sample close to one direction). Lossy OGG/Vorbis at 48 kHz
stays within 3e-4 (measured: 5e-5).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from cadenza.engine import Engine
from cadenza.engine.bundle import Bundle
from cadenza.engine.errors import VoiceError
from cadenza.engine.voice_library import VoiceEncoder, VoiceLibrary, encode_voice
from cadenza.engine.voices import FORMAT_VERSION, META_KEY, Voice, VoiceStore, check_name
from test_audio import voiced, wav_bytes

SR, E, K, HOP = 24_000, 256, 4, 1920
TEXT = "Hello there."


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Bundle:
    return Bundle.load(tiny_bundle)


@pytest.fixture(scope="module")
def engine(bundle, tmp_path_factory):
    """An engine whose voice store is a temporary directory (never the user's)."""
    e = Engine.load(bundle, threads=1, max_streams=2, voice_store=tmp_path_factory.mktemp("store"))
    yield e
    e.close()


@pytest.fixture(scope="module")
def voices(engine) -> dict:
    """Two samples, each stored with and without a prompt: a, a_p, b, b_p."""
    out = {}
    for key, seed, f0 in (("a", 0, 140.0), ("b", 1, 220.0)):
        out[key] = engine.voices.add(wav_bytes(voiced(seed=seed, f0=f0), SR), key)
        out[key + "_p"] = engine.voices.add(wav_bytes(voiced(seed=seed, f0=f0), SR), key + "_p", with_prompt=True,
                                            transcript=f"sample {key}")
    return out


def codes(engine, voice) -> np.ndarray:
    s = engine.stream(TEXT, voice=voice, greedy=True, frames=12)
    s.read_all()
    return s.codes


def make_voice(bundle, name="v", value=1.0, prompt=None, **meta) -> Voice:
    m = {"family": bundle.manifest["family"], "bundle_hash": bundle.hash, "duration_s": 3.0, **meta}
    return Voice(name, np.full(E, value, np.float32), prompt, "hi" if prompt is not None else None, m)


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


# --- the store ----------------------------------------------------------------------
def test_store_add_get_list_remove(tmp_path, bundle):
    store = VoiceStore(tmp_path / "voices")
    assert store.list() == []
    store.add(make_voice(bundle, "b", 2.0))
    store.add(make_voice(bundle, "a", 1.0, np.zeros((4, 5), np.int64), created="2026-01-01T00:00:00Z"))
    assert np.array_equal(store.get("a").embedding, np.full(E, 1.0, np.float32))
    entries = store.list()
    assert [e["name"] for e in entries] == ["a", "b"] and [e["prompt"] for e in entries] == [True, False]
    assert entries[0]["duration_s"] == 3.0 and entries[0]["bundle_hash"] == bundle.hash
    assert entries[0]["created"] == "2026-01-01T00:00:00Z"
    (tmp_path / "voices" / "c.safetensors").write_bytes(b"junk")
    (tmp_path / "voices" / ".a.safetensors.x.tmp").write_bytes(b"junk")  # a writer's temp file: not listed
    assert [(e["name"], "error" in e) for e in store.list()] == [("a", False), ("b", False), ("c", True)]
    store.remove("b")
    with pytest.raises(VoiceError, match="no voice named 'b'"):
        store.get("b")
    with pytest.raises(VoiceError, match="no voice named 'b'"):
        store.remove("b")


def test_default_store_directory():
    from platformdirs import user_data_dir

    assert VoiceStore().directory == VoiceStore(None).directory
    assert str(VoiceStore().directory) == os.path.join(user_data_dir("cadenza"), "voices")


def test_names_are_immutable_unless_replaced(tmp_path, bundle):
    store = VoiceStore(tmp_path)
    p = store.add(make_voice(bundle, "v", 1.0))
    before = p.read_bytes()
    with pytest.raises(VoiceError, match="already exists"):
        store.add(make_voice(bundle, "v", 2.0))
    assert p.read_bytes() == before
    ino = p.stat().st_ino
    store.add(make_voice(bundle, "v", 2.0), replace=True)
    assert store.get("v").embedding[0] == 2.0
    assert p.stat().st_ino != ino  # a new file renamed over the old one, not rewritten in place
    assert sorted(x.name for x in tmp_path.iterdir()) == ["v.safetensors"]


WRITER = r"""
import json, sys
import numpy as np
from cadenza.engine.voices import Voice, VoiceStore
store, n, meta = VoiceStore(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
vs = [Voice("v", np.full(256, i, np.float32), np.full((4, 4000), i, np.int64), "t", meta) for i in (1, 2)]
for k in range(n):
    store.add(vs[k % 2], replace=True)
"""


def test_concurrent_replace_and_reads(tmp_path, bundle):
    """A writer process replaces the voice in a loop; reader threads never see a partial file."""
    store = VoiceStore(tmp_path)
    meta = {"family": bundle.manifest["family"], "bundle_hash": bundle.hash}
    store.add(Voice("v", np.full(E, 1, np.float32), np.full((4, 4000), 1, np.int64), "t", meta))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "400", json.dumps(meta)])
    seen, errors = [], []

    def read(fn):
        try:
            while writer.poll() is None:
                v = fn()
                i = v.embedding[0]
                assert i in (1, 2) and (v.embedding == i).all() and (v.prompt_codes == i).all(), "mixed versions"
                seen.append(i)
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=read, args=(lambda: store.get("v"),)),
               threading.Thread(target=read, args=(lambda: store.resolve("v", bundle),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert writer.wait(60) == 0
    assert not errors, errors[:3]
    assert len(seen) > 20 and {1, 2} <= set(seen)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["v.safetensors"]


# --- bundle checks ----------------------------------------------------------------------
@pytest.mark.parametrize("meta,match", [
    pytest.param({"bundle_hash": "0" * 64}, "re-add the voice with this bundle", id="other-hash"),
    pytest.param({"family": "other-family"}, "re-add the voice with this bundle", id="other-family"),
    pytest.param({"bundle_hash": None}, "re-add the voice with this bundle", id="no-hash"),
])
def test_resolve_refuses_other_bundles(tmp_path, bundle, engine, meta, match):
    store = VoiceStore(tmp_path)
    v = make_voice(bundle, "old", **meta)
    store.add(v)
    for ref in ("old", str(tmp_path / "old.safetensors"), v):
        with pytest.raises(VoiceError, match=match):
            store.resolve(ref, bundle)
    with pytest.raises(VoiceError, match=match):
        engine.stream(TEXT, voice=v, frames=2)


def test_resolve_checks_embedding_size(bundle):
    v = Voice("small", np.ones(8, np.float32), meta={"family": bundle.manifest["family"], "bundle_hash": bundle.hash})
    with pytest.raises(VoiceError, match="embedding"):
        VoiceStore().resolve(v, bundle)


# --- encoding ---------------------------------------------------------------------------
def test_encode_is_deterministic(engine, bundle):
    pcm = voiced()[SR // 4:-SR // 4]
    a = encode_voice(engine, pcm, "x", with_prompt=True)
    b = encode_voice(engine, pcm, "x", with_prompt=True)
    c = encode_voice(VoiceEncoder(bundle), pcm, "x", with_prompt=True)  # fresh graphs
    for v in (b, c):
        assert np.array_equal(v.embedding, a.embedding) and np.array_equal(v.prompt_codes, a.prompt_codes)
    assert a.embedding.shape == (E,) and a.embedding.dtype == np.float32
    assert a.prompt_codes.shape == (K, len(pcm) // HOP) and a.prompt_codes.dtype == np.int64
    assert 0 <= a.prompt_codes.min() and a.prompt_codes.max() < 64
    assert a.meta["family"] == bundle.manifest["family"] and a.meta["bundle_hash"] == bundle.hash
    assert a.meta["prompt_frames"] == len(pcm) // HOP and a.meta["cadenza_version"]


def test_prompt_is_capped_at_10_s(engine):
    v = encode_voice(engine, np.tile(voiced(lead=0), 5), "long", with_prompt=True)  # 15 s
    assert v.prompt_codes.shape == (K, int(10 * SR) // HOP)


def _cmp(x, y):
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)), float(np.abs(x - y).max())


def test_embedding_is_rate_independent(engine):
    lib = engine.voices
    ref = lib.encoder.embedding(_load(SR))
    other = lib.encoder.embedding(_load(SR, seed=1, f0=220.0))
    cos, diff_other = _cmp(ref, other)
    assert diff_other > 1e-2, "a different voice must differ by far more than the tolerances below"
    for sr in (16000, 44100, 48000):
        cos, diff = _cmp(ref, lib.encoder.embedding(_load(sr)))
        assert diff <= 1e-5 and cos >= 1 - 1e-6, (sr, cos, diff)
    if "OGG" in sf.available_formats():
        cos, diff = _cmp(ref, lib.encoder.embedding(_load(48000, fmt="OGG")))
        # lossy Vorbis moves the log band energies a little: still 10x closer than another voice
        assert diff <= 2e-3 and diff < diff_other / 10 and cos >= 1 - 1e-4, ("ogg", cos, diff, diff_other)


def _load(sr, fmt="WAV", **kw):
    from cadenza.engine.audio import load_audio

    return load_audio(wav_bytes(voiced(sr, **kw), sr, fmt), SR)[0]


# --- the engine -----------------------------------------------------------------------
def test_engine_voices_api(engine, voices):
    lib = engine.voices
    assert isinstance(lib, VoiceLibrary) and lib.store.directory != VoiceStore().directory
    assert {"a", "a_p", "b", "b_p"} <= {e["name"] for e in lib.list()}
    assert np.array_equal(lib.get("a").embedding, voices["a"].embedding)
    assert voices["a_p"].transcript == "sample a" and voices["a_p"].prompt_codes.shape[0] == K
    assert voices["a"].meta["source_sample_rate"] == SR and voices["a"].meta["duration_s"] == pytest.approx(3.1, 0.01)
    v = lib.add(voiced(16000), "from-array", sample_rate=16000)  # an array at its own rate
    assert np.abs(v.embedding - voices["a"].embedding).max() < 1e-5
    with pytest.raises(VoiceError, match="already exists"):
        lib.add(voiced(16000), "from-array", sample_rate=16000)
    with pytest.raises(VoiceError, match="at least 1 s"):
        lib.add(voiced(seconds=0.5), "short")
    lib.remove("from-array")
    with pytest.raises(VoiceError, match="no voice named"):
        lib.get("from-array")


def test_voices_condition_generation(engine, bundle, voices):
    """A voice's embedding and its acoustic prompt both reach the model: with greedy decoding, two
    voices made from different samples give different codes for the same text, and so does the
    same voice with its acoustic prompt."""
    assert not np.array_equal(codes(engine, voices["a"]), codes(engine, voices["b"]))  # the embedding
    assert not np.array_equal(codes(engine, voices["a_p"]), codes(engine, voices["a"]))  # the prompt
    d = voices["a"].embedding - voices["b"].embedding
    d *= 8 / np.linalg.norm(d)
    plus, minus = make_voice(bundle, "plus"), make_voice(bundle, "minus")
    plus.embedding, minus.embedding = d, -d
    assert not np.array_equal(codes(engine, plus), codes(engine, minus))
    np.testing.assert_array_equal(codes(engine, plus.embedding), codes(engine, plus))  # array == Voice
    assert codes(engine, None).shape == (K, 12)


def test_stored_voice_gives_identical_codes(engine, voices):
    store = engine.voices.store
    for key in ("a", "a_p"):
        mem = codes(engine, voices[key])
        np.testing.assert_array_equal(codes(engine, store.get(key)), mem)
        np.testing.assert_array_equal(codes(engine, Voice.load(store.path(key))), mem)
    np.testing.assert_array_equal(codes(engine, "a"), codes(engine, voices["a"]))  # by name
    np.testing.assert_array_equal(codes(engine, str(store.path("a"))), codes(engine, voices["a"]))  # by path
    with pytest.raises(VoiceError, match="no voice named 'nobody'"):
        engine.stream(TEXT, voice="nobody")


def test_stored_prompt_voice_by_name(engine, voices):
    np.testing.assert_array_equal(codes(engine, "a_p"), codes(engine, voices["a_p"]))


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
