"""`VoiceStore`: add / get / list / remove, immutable names, atomic replace under concurrent readers,
and the bundle compatibility check."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from cadenza.engine.errors import VoiceError
from cadenza.engine.voices.store import VoiceStore
from cadenza.engine.voices.voice import Voice
from support import E, TEXT, make_voice


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
from cadenza.engine.voices.store import VoiceStore
from cadenza.engine.voices.voice import Voice
store, n, meta = VoiceStore(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
vs = [Voice("v", np.full(256, i, np.float32), np.full((4, 120), i, np.int64), "t", meta) for i in (1, 2)]
for k in range(n):
    store.add(vs[k % 2], replace=True)
"""

def test_concurrent_replace_and_reads(tmp_path, bundle):
    """A writer process replaces the voice in a loop; reader threads never see a partial file."""
    store = VoiceStore(tmp_path)
    meta = {"family": bundle.manifest["family"], "bundle_hash": bundle.hash}
    store.add(Voice("v", np.full(E, 1, np.float32), np.full((4, 120), 1, np.int64), "t", meta))
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

@pytest.mark.parametrize("meta,match", [
    pytest.param({"bundle_hash": "0" * 64}, "re-add the voice with this bundle", id="other-hash"),
    pytest.param({"family": "other-family"}, "re-add the voice with this bundle", id="other-family"),
    pytest.param({"bundle_hash": None}, "re-add the voice with this bundle", id="no-hash"),
])
def test_resolve_refuses_other_bundles(tmp_path, bundle, engine, meta, match):
    store = VoiceStore(tmp_path)
    v = make_voice(bundle, "old", **meta)
    store.add(v)
    for ref in ("old", tmp_path / "old.safetensors", v):
        with pytest.raises(VoiceError, match=match):
            store.resolve(ref, bundle)
    with pytest.raises(VoiceError, match=match):
        engine.stream(TEXT, voice=v, frames=2)

def test_resolve_checks_embedding_size(bundle):
    v = Voice("small", np.ones(8, np.float32), meta={"family": bundle.manifest["family"], "bundle_hash": bundle.hash})
    with pytest.raises(VoiceError, match="embedding"):
        VoiceStore().resolve(v, bundle)
