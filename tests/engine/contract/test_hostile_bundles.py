"""A bundle is input: tried as an attacker would, with its hashes recomputed after every edit.

Every case must end in a `BundleError` that names the problem, without opening any file outside the
bundle (every Python-level open is recorded by an audit hook; ONNX Runtime is handed verified bytes,
so it opens no file of its own) and without allocating from the hostile numbers.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.errors import BundleError
from hostile import edit_manifest, opened_files, outside, rehash


@pytest.fixture
def case(tiny_bundle, tmp_path):
    """A copy of the tiny bundle under tmp_path/b, and a sentinel file beside it (outside the bundle)."""
    d = shutil.copytree(tiny_bundle, tmp_path / "b")
    (tmp_path / "sentinel").write_text("secret")
    return d


def refused(d: Path, match: str | None, **load) -> str:
    """Load (and open every graph of) `d`; assert a BundleError matching `match` and no outside open."""
    from cadenza.engine.backends.ort.graph import OrtGraph

    with opened_files() as opened, pytest.raises(BundleError, match=match) as err:
        b = Bundle.load(d, **load)
        for role in b.manifest["graphs"]:
            OrtGraph(b, role, {"batch": 1}, threads=1)
    assert not outside(opened, d), outside(opened, d)
    assert "secret" not in str(err.value)
    return str(err.value)


# --- paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../sentinel", "/etc/passwd", "weights/../../sentinel", "a//b", ".", "x\\y"])
def test_a_file_entry_outside_the_bundle(case, name):
    edit_manifest(case, lambda m: m["files"].__setitem__(name, "0" * 64))
    refused(case, "leaves the bundle|not a plain relative path")


def test_the_answer_does_not_reveal_whether_an_outside_file_exists(case):
    edit_manifest(case, lambda m: m["files"].__setitem__("../sentinel", "0" * 64))
    a = refused(case, "leaves the bundle")
    edit_manifest(case, lambda m: (m["files"].pop("../sentinel"), m["files"].__setitem__("../nope", "0" * 64)))
    b = refused(case, "leaves the bundle")
    assert a.replace("sentinel", "X") == b.replace("nope", "X")


def test_a_graph_file_outside_or_unhashed(case, tmp_path):
    shutil.copyfile(case / "backbone.onnx", tmp_path / "evil_step.onnx")
    edit_manifest(case, lambda m: m["graphs"]["backbone"].__setitem__("file", "../evil_step.onnx"))
    refused(case, "leaves the bundle")
    shutil.copyfile(case / "depth.onnx", case / "unhashed.onnx")
    edit_manifest(case, lambda m: m["graphs"]["backbone"].__setitem__("file", "unhashed.onnx"))
    refused(case, "not among the manifest's hashed files")


@pytest.mark.parametrize("target", ["sentinel", "b/depth.onnx"], ids=["outside", "inside"])
def test_a_symbolic_link_is_refused(case, tmp_path, target):
    f = case / "codec_decode.onnx"
    f.unlink()
    os.symlink(tmp_path / target, f)
    refused(case, "a link")


def test_external_data_pointing_outside(external_bundle, tmp_path):
    """An ONNX graph whose external-data location leads out of the bundle (hashes recomputed)."""
    onnx = pytest.importorskip("onnx")
    d = shutil.copytree(external_bundle, tmp_path / "b")
    (tmp_path / "sentinel").write_bytes(np.arange(1 << 16, dtype=np.float32).tobytes())
    m = onnx.load(str(d / "codec_decode.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../sentinel"
    onnx.save(m, str(d / "codec_decode.onnx"))
    rehash(d)
    refused(d, "not one of this graph's data files")


# --- hashes and signatures -------------------------------------------------------------------
def test_every_file_is_checked(tiny_bundle, external_bundle, tmp_path):
    """One flipped byte in any file of the manifest (external data included) is refused at load."""
    for src in (tiny_bundle, external_bundle):
        names = list(Bundle.load(src).manifest["files"])
        assert any(n.endswith(".onnx.data") for n in names) or src == tiny_bundle
        for name in names:
            d = shutil.copytree(src, tmp_path / f"{Path(src).name}-{name.replace('/', '_')}")
            data = bytearray((d / name).read_bytes())
            data[len(data) // 2] ^= 0x01
            (d / name).write_bytes(bytes(data))
            with pytest.raises(BundleError, match="does not match its manifest hash"):
                Bundle.load(d)


@pytest.mark.parametrize("name", ["backbone.onnx", "depth.onnx", "codec_decode.onnx",
                                  "codec_decode.onnx.data", "depth.onnx.data"])
def test_the_bytes_onnx_runtime_gets_are_the_bytes_hashed(external_bundle, tmp_path, name):
    """A file swapped after the bundle was verified (or loaded with verify=False) is caught when its
    graph is opened: the graph and its external data are hashed as they are read."""
    from cadenza.engine.backends.ort.graph import OrtGraph

    d = shutil.copytree(external_bundle, tmp_path / "b")
    b = Bundle.load(d)
    data = bytearray((d / name).read_bytes())
    data[-5] ^= 0x01
    tmp = d / (name + ".new")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, d / name)  # the swap after verification
    role = name.split(".")[0]
    for bundle in (b, Bundle.load(d, verify=False)):
        with pytest.raises(BundleError, match="does not match its manifest hash"):
            OrtGraph(bundle, role, {"batch": 1}, threads=1)


def test_signed_bundles(case, tmp_path):
    pytest.importorskip("cryptography")
    from cadenza.engine.contract.signing import keygen, sign

    private, public = keygen(tmp_path / "keys" / "k")
    other_private, other_public = keygen(tmp_path / "keys" / "other")
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(BundleError, match="not signed"):
        Bundle.load(case, trusted_keys=[public])
    sign(case, private.read_bytes())
    assert Bundle.load(case, trusted_keys=[public]).hash
    assert Bundle.load(case, trusted_keys=[other_public, public]).hash
    with pytest.raises(BundleError, match="not signed by a trusted key"):
        Bundle.load(case, trusted_keys=[other_public])
    # a malicious edit with every hash recomputed: the hashes pass, the signature does not
    edit_manifest(case, lambda m: m["sampling"].__setitem__("temperature", 2.0))
    Bundle.load(case)
    with pytest.raises(BundleError, match="not signed by a trusted key"):
        Bundle.load(case, trusted_keys=[public])


def test_trusted_keys_from_the_environment(case, tmp_path, monkeypatch):
    pytest.importorskip("cryptography")
    from cadenza.engine.contract.signing import keygen

    _, public = keygen(tmp_path / "k")
    monkeypatch.setenv("CADENZA_TRUSTED_KEYS", str(public))
    with pytest.raises(BundleError, match="not signed"):
        Bundle.load(case)


# --- absurd values ---------------------------------------------------------------------------
ABSURD = {
    "codebooks": (lambda m: m["constants"].__setitem__("n_codebooks", 10 ** 6), "n_codebooks"),
    "speaker_dim": (lambda m: m["constants"].__setitem__("speaker_dim", 2 * 10 ** 9), "speaker_dim"),
    "hop_zero": (lambda m: m["constants"].__setitem__("hop", 0), "hop"),
    "frame_rate_zero": (lambda m: m["constants"].__setitem__("frame_rate", 0.0), "frame_rate"),
    "kv_layers": (lambda m: m["graphs"]["backbone"]["kv"].__setitem__("layers", 10 ** 6), "kv layers"),
    "output_shape": (lambda m: m["graphs"]["backbone"]["outputs"][0].__setitem__("shape", ["batch", 10 ** 9]),
                     "dim"),
    "state_shape": (lambda m: m["graphs"]["codec_decode"]["state"][0].__setitem__("shape", [64, 10 ** 9]), "state"),
    "dtype": (lambda m: m["graphs"]["codec_decode"]["inputs"][0].__setitem__("dtype", "object"), "dtype"),
    "kv_name": (lambda m: m["graphs"]["backbone"]["kv"].__setitem__("past_key", "%s%n"), "%d"),
    "role": (lambda m: m["graphs"].__setitem__("../../x", m["graphs"]["backbone"]), "unknown graph role"),
    "logits": (lambda m: m["layout"].__setitem__("logits_size", 10 ** 9), "logits_size"),
    "string_constant": (lambda m: m["constants"].__setitem__("sample_rate", "24000"), "sample_rate"),
    "kv_mode": (lambda m: m["graphs"]["backbone"]["kv"].__setitem__("mode", "elsewhere"), "kv mode"),
    "embedding_row": (lambda m: m["graphs"]["backbone"]["embedding"].__setitem__("null_row", 10 ** 12), "null_row"),
    "embedding_slots": (lambda m: m["graphs"]["backbone"]["embedding"].__setitem__("slots", 10 ** 6), "slots"),
    "depth_offsets": (lambda m: m["graphs"]["depth"]["embedding"].__setitem__("offsets", [0]), "offsets"),
    "no_backbone": (lambda m: m["graphs"].pop("backbone"), "backbone"),
    "heads": (lambda m: m["layout"].__setitem__("heads", [[0, 1]]), "head"),
}


@pytest.mark.parametrize("key", list(ABSURD))
def test_absurd_values_are_refused_before_allocation(case, key):
    mutate, field = ABSURD[key]
    edit_manifest(case, mutate)
    assert field in refused(case, None)


def test_a_torch_backend_config_that_disagrees_with_the_manifest(case):
    pytest.importorskip("torch")
    import json
    import resource

    from cadenza.engine.backends.torch.model import load_model

    cfg = json.loads((case / "weights" / "config.json").read_text())
    cfg["backbone"]["dim"] = 10 ** 6
    (case / "weights" / "config.json").write_text(json.dumps(cfg))
    rehash(case)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match="backbone_dim"):
        load_model(Bundle.load(case))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing was built
