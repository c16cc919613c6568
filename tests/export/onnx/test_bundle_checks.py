"""The exported bundle: valid ONNX, a complete manifest, hierarchical node names,
and graph signatures that agree with the manifest."""
from __future__ import annotations

import json
import re

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from cadenza.engine.contract import text as tok  # noqa: E402
from cadenza.engine.contract.bundle import FORMAT_VERSION, MANIFEST, ROLES, content_hash, sha256_file  # noqa: E402
from cadenza.export.model.config import TTSConfig  # noqa: E402

DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}


@pytest.fixture(scope="module")
def manifest(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / MANIFEST).read_text())


def _declared(vi) -> tuple[str, list]:
    t = vi.type.tensor_type
    return DTYPES.get(t.elem_type, str(t.elem_type)), [d.dim_param or d.dim_value for d in t.shape.dim]


@pytest.mark.parametrize("role", ROLES)
def test_onnx_checker_passes(role, tiny_bundle):
    onnx.checker.check_model(str(tiny_bundle / f"{role}.onnx"), full_check=True)


def test_manifest_top_level(manifest, tiny_model):
    cfg = tiny_model.cfg
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["family"] == "cadenza-reference"
    assert manifest["size"] == "tiny"
    assert manifest["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert TTSConfig.from_dict(manifest["config"]) == cfg
    c = manifest["constants"]
    assert (c["sample_rate"], c["hop"], c["frame_rate"]) == (24000, 1920, 12.5)
    assert (c["n_codebooks"], c["codebook_size"], manifest["layout"]["eos_column"]) == (4, 64, 64)
    assert (c["backbone_layers"], c["kv_heads"], c["head_dim"]) == (2, 2, 16)
    assert c["depth_layers"] == 1 and c["speaker_dim"] == cfg.speaker_dim
    assert manifest["tokenizer"]["special_tokens"] == tok.SPECIAL_TOKENS == {"bos": 256, "eot": 257, "pad": 258,
                                                                            "voice": 259}
    assert manifest["prompt"]["voice_kind"] == "embedding" and manifest["codec"] == {"kind": "stateful"}
    for key in ("torch", "onnx", "onnxruntime", "python", "opset"):
        assert manifest["versions"][key], key
    assert manifest["content_sha256"] == content_hash(manifest)


def test_manifest_lists_exactly_the_bundle_files(manifest, tiny_bundle):
    """Every file of the bundle directory is hashed in the manifest, and every listed file exists."""
    files = manifest["files"]
    expected = {f"{r}.onnx" for r in ROLES} | {"weights/model.safetensors", "weights/config.json"}
    assert expected <= set(files), expected - set(files)
    on_disk = {p.relative_to(tiny_bundle).as_posix() for p in tiny_bundle.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(files)
    for name, digest in files.items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest), name
    for role, entry in manifest["graphs"].items():
        assert entry["file"] in files and all(d in files for d in entry["data"]), role


def test_manifest_roles_match_specs(manifest, tiny_specs):
    assert list(manifest["graphs"]) == list(ROLES) == list(tiny_specs)
    for role, spec in tiny_specs.items():
        g = manifest["graphs"][role]
        assert g["file"] == f"{role}.onnx"
        assert g["inputs"] == [t.to_dict() for t in spec.inputs], role
        assert g["outputs"] == [t.to_dict() for t in spec.outputs], role


@pytest.mark.parametrize("role,n_layers", [("backbone_prefill", 2), ("backbone_step", 2), ("depth_step", 1)])
def test_manifest_kv_names(role, n_layers, manifest):
    g = manifest["graphs"][role]
    kv = g["kv"]
    assert kv["layers"] == n_layers
    inputs = {t["name"]: t for t in g["inputs"]}
    outputs = {t["name"]: t for t in g["outputs"]}
    for l in range(n_layers):
        for kind in ("key", "value"):
            past, new = inputs[kv[f"past_{kind}"] % l], outputs[kv[f"new_{kind}"] % l]
            assert past["shape"][1] == new["shape"][1] == kv["kv_heads"]
            assert past["shape"][3] == new["shape"][3] == kv["head_dim"]
            assert isinstance(past["shape"][2], str)  # symbolic cache length
    # symbolic dims carry meaningful names
    assert inputs[kv["past_key"] % 0]["shape"][0] == "batch"


def test_manifest_codec_state(manifest, tiny_model):
    g = manifest["graphs"]["codec_decode"]
    shapes = tiny_model.codec.decoder.state_shapes()
    assert [tuple(s["shape"]) for s in g["state"]] == shapes
    assert [s["input"] for s in g["state"]] == [t["name"] for t in g["inputs"][1:]]
    assert [s["output"] for s in g["state"]] == [t["name"] for t in g["outputs"][1:]]
    assert g["inputs"][0]["name"] == "codes" and g["inputs"][0]["shape"] == ["batch", 4, "frames"]
    assert g["outputs"][0]["name"] == "pcm" and g["outputs"][0]["shape"][0] == "batch"
    for role in ROLES:
        if role != "codec_decode":
            assert manifest["graphs"][role]["state"] == []


@pytest.mark.parametrize("role", ROLES)
def test_graph_inputs_match_manifest(role, manifest, tiny_bundle):
    """Graph input names, order, dtypes and dims (values and symbolic names) are the manifest's."""
    proto = onnx.load(str(tiny_bundle / f"{role}.onnx"), load_external_data=False)
    g = manifest["graphs"][role]
    declared = [(vi.name, *_declared(vi)) for vi in proto.graph.input]
    assert declared == [(t["name"], t["dtype"], t["shape"]) for t in g["inputs"]]
    assert [o.name for o in proto.graph.output] == [t["name"] for t in g["outputs"]]


@pytest.mark.parametrize("role", ROLES)
def test_graph_outputs_compatible_with_manifest(role, manifest, tiny_bundle):
    """Output dtype and rank agree, and every dim the graph fixes agrees with the manifest."""
    proto = onnx.load(str(tiny_bundle / f"{role}.onnx"), load_external_data=False)
    for vi, t in zip(proto.graph.output, manifest["graphs"][role]["outputs"]):
        dtype, dims = _declared(vi)
        assert dtype == t["dtype"] and len(dims) == len(t["shape"]), vi.name
        for d, m in zip(dims, t["shape"]):
            assert isinstance(d, str) or d == m, f"{role} {vi.name}: graph dims {dims}, manifest {t['shape']}"
            assert not isinstance(m, str) or d == m, f"{role} {vi.name}: graph dims {dims}, manifest {t['shape']}"


@pytest.mark.parametrize("role", ["backbone_prefill", "backbone_step", "depth_step", "codec_decode", "codec_encode"])
def test_graph_outputs_declared_exactly_as_manifest(role, manifest, tiny_bundle):
    proto = onnx.load(str(tiny_bundle / f"{role}.onnx"), load_external_data=False)
    declared = [(vi.name, *_declared(vi)) for vi in proto.graph.output]
    assert declared == [(t["name"], t["dtype"], t["shape"]) for t in manifest["graphs"][role]["outputs"]]


def test_onnxruntime_sees_manifest_names(manifest, tiny_ort):
    for role in ROLES:
        sess = tiny_ort.session(role)
        g = manifest["graphs"][role]
        assert [i.name for i in sess.get_inputs()] == [t["name"] for t in g["inputs"]], role
        assert [o.name for o in sess.get_outputs()] == [t["name"] for t in g["outputs"]], role


@pytest.mark.parametrize("role,layers,scope", [
    ("backbone_step", 2, "/bb/transformer/layers.{l}/attn/"),
    ("backbone_prefill", 2, "/bb/transformer/layers.{l}/attn/"),
    ("depth_step", 1, "/depth/transformer/layers.{l}/attn/"),
])
def test_node_names_are_hierarchical(role, layers, scope, tiny_bundle):
    names = [n.name for n in onnx.load(str(tiny_bundle / f"{role}.onnx"), load_external_data=False).graph.node]
    for l in range(layers):
        prefix = scope.format(l=l)
        assert any(n.startswith(prefix) for n in names), f"no node under {prefix} in {role}"
        assert any(n.startswith(prefix + "q_proj/") and n.endswith("MatMul") for n in names), prefix
        assert any(f"/layers.{l}/mlp/" in n for n in names), l


def test_codec_node_names_are_hierarchical(tiny_bundle):
    names = [n.name for n in onnx.load(str(tiny_bundle / "codec_decode.onnx")).graph.node]
    assert any(re.match(r"/.*decoder/ups\.0/", n) for n in names), names[:20]


def test_k1_manifest(tiny_bundle_k1):
    m = json.loads((tiny_bundle_k1 / MANIFEST).read_text())
    assert "depth_step" not in m["graphs"] and "depth_step.onnx" not in m["files"]
    assert m["constants"]["n_codebooks"] == 1 and m["constants"]["depth_layers"] == 0
    assert m["graphs"]["backbone_step"]["inputs"][0]["shape"] == ["batch", 1]
