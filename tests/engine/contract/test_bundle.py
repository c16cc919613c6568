"""`Bundle.load`: a good bundle loads; every kind of damaged bundle is refused with a
`BundleError` that names the problem and says how to rebuild (`cadenza export`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cadenza.engine.contract.bundle import FORMAT_VERSION, MANIFEST, ROLES, Bundle, BundleError


def test_load_good_bundle(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    assert b.path == Path(tiny_bundle)
    c = b.constants
    assert (c.sample_rate, c.hop, c.frame_rate, c.n_codebooks) == (24000, 1920, 12.5, 4)
    assert b.manifest["config"]["codec"]["n_codebooks"] == 4
    assert len(b.hash) == 64 and b.hash == b.manifest["content_sha256"]
    for role in ROLES:
        assert b.has(role) and b.graph_path(role).is_file()
        assert b.graph(role)["inputs"] and b.graph(role)["outputs"]
    with pytest.raises(AttributeError):
        b.sample_rate  # constants are typed, under `constants`


def test_missing_role_is_a_bundle_error(tiny_bundle_k1):
    b = Bundle.load(tiny_bundle_k1)
    assert not b.has("depth")
    with pytest.raises(BundleError, match="depth"):
        b.graph("depth")


def _truncate(d: Path):
    f = d / "backbone.onnx"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _replace(d: Path):
    shutil.copyfile(d / "depth.onnx", d / "backbone.onnx")


def _replace_weights(d: Path):
    f = d / "weights" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight
    f.write_bytes(bytes(data))


def _missing(d: Path):
    (d / "codec_decode.onnx").unlink()


def _edit_manifest(mutate):
    def tamper(d: Path):
        m = json.loads((d / MANIFEST).read_text())
        mutate(m)
        (d / MANIFEST).write_text(json.dumps(m, indent=2))
    return tamper


def _set_config(m):
    m["config"]["backbone"]["n_layers"] += 1


def _set_constant(m):
    m["constants"]["hop"] = 960


def _rehash_file(m):
    m["files"]["backbone.onnx"] = "0" * 64


def _set_version(m):
    m["format_version"] = FORMAT_VERSION + 1


def _drop_version(m):
    del m["format_version"]


def _not_json(d: Path):
    (d / MANIFEST).write_text('{"format_version": 1, "graphs": ')


def _not_object(d: Path):
    (d / MANIFEST).write_text("[1, 2, 3]")


def _binary_manifest(d: Path):
    (d / MANIFEST).write_bytes(b"\xff\xfe\x00garbage")


def _no_manifest(d: Path):
    (d / MANIFEST).unlink()


TAMPER = [
    pytest.param(_truncate, "backbone.onnx", id="truncated_onnx"),
    pytest.param(_replace, "backbone.onnx", id="onnx_replaced_by_another"),
    pytest.param(_replace_weights, "model.safetensors", id="weights_byte_flipped"),
    pytest.param(_missing, "codec_decode.onnx", id="missing_file"),
    pytest.param(_edit_manifest(_set_config), "edited", id="manifest_config_edited"),
    pytest.param(_edit_manifest(_set_constant), "edited", id="manifest_constant_edited"),
    pytest.param(_edit_manifest(_rehash_file), "edited", id="manifest_file_hash_edited"),
    pytest.param(_edit_manifest(_set_version), "format", id="wrong_format_version"),
    pytest.param(_edit_manifest(_drop_version), "format", id="no_format_version"),
    pytest.param(_not_json, MANIFEST, id="manifest_not_json"),
    pytest.param(_not_object, MANIFEST, id="manifest_not_an_object"),
    pytest.param(_binary_manifest, MANIFEST, id="manifest_binary"),
    pytest.param(_no_manifest, MANIFEST, id="no_manifest"),
]


@pytest.mark.parametrize("tamper,mentions", TAMPER)
def test_tampered_bundle_is_refused(tamper, mentions, tiny_bundle, tmp_path):
    d = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, d)
    Bundle.load(d)  # the copy itself is good
    tamper(d)
    with pytest.raises(BundleError) as err:
        Bundle.load(d)
    msg = str(err.value)
    assert "cadenza export" in msg, msg
    assert mentions in msg, msg


def test_empty_directory_is_refused(tmp_path):
    with pytest.raises(BundleError, match="cadenza export"):
        Bundle.load(tmp_path)


def test_nonexistent_directory_is_refused(tmp_path):
    with pytest.raises(BundleError, match="cadenza export"):
        Bundle.load(tmp_path / "nope")


def test_bundle_error_is_catchable_from_engine_errors():
    errors = pytest.importorskip("cadenza.engine.errors")
    assert errors.BundleError is BundleError
