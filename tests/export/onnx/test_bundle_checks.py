"""The exported bundle: valid ONNX, a complete manifest, hierarchical node names,
and graph signatures that agree with the manifest, for fused and portable graphs."""
from __future__ import annotations

import json
import re

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from cadenza.engine.contract import text as tok  # noqa: E402
from cadenza.engine.contract.bundle import FORMAT_VERSION, MANIFEST, ROLES, content_hash  # noqa: E402
from cadenza.export.model.config import TTSConfig  # noqa: E402

DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}


@pytest.fixture(scope="module", params=["fused", "portable"])
def bundle(request, tiny_bundle, tiny_bundle_portable):
    return tiny_bundle if request.param == "fused" else tiny_bundle_portable


@pytest.fixture(scope="module")
def manifest(bundle) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def _declared(vi) -> tuple[str, list]:
    t = vi.type.tensor_type
    return DTYPES.get(t.elem_type, str(t.elem_type)), [d.dim_param or d.dim_value for d in t.shape.dim]


@pytest.mark.parametrize("role", ROLES)
def test_onnx_checker_passes(role, bundle):
    onnx.checker.check_model(str(bundle / f"{role}.onnx"), full_check=True)


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


def test_manifest_lists_exactly_the_bundle_files(manifest, bundle, tiny_bundle):
    """Every file of the bundle directory is hashed in the manifest, and every listed file exists; the
    PyTorch weights only when asked for (`torch_weights=True`, the fused fixture)."""
    files = manifest["files"]
    torch_files = {"weights/model.safetensors", "weights/config.json"}
    expected = {f"{r}.onnx" for r in ROLES} | (torch_files if bundle == tiny_bundle else set())
    assert expected == {f for f in files if not f.endswith(".data")}, expected ^ set(files)
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(files)
    for name, digest in files.items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest), name
    for role, entry in manifest["graphs"].items():
        assert entry["file"] in files and all(d in files for d in entry["data"]), role


def test_manifest_roles_match_specs(manifest, tiny_specs):
    """Both forms take the same inputs; they differ only in how the new K/V leave (returned or in place)."""
    assert list(manifest["graphs"]) == list(ROLES) == list(tiny_specs)
    for role, spec in tiny_specs.items():
        g = manifest["graphs"][role]
        assert g["file"] == f"{role}.onnx"
        assert g["inputs"] == [t.to_dict() for t in spec.inputs], role
        if g.get("form") == "fused":
            outs = [t.to_dict() for t in spec.outputs if not t.name.startswith("new_")]
            assert g["outputs"][:len(outs)] == outs, role
        else:
            assert g["outputs"] == [t.to_dict() for t in spec.outputs], role


@pytest.mark.parametrize("role,n_layers", [("backbone", 2), ("depth", 1)])
def test_manifest_kv_names(role, n_layers, manifest):
    g = manifest["graphs"][role]
    kv = g["kv"]
    assert kv["layers"] == n_layers and kv["mode"] == ("in_place" if g["form"] == "fused" else "returned")
    inputs = {t["name"]: t for t in g["inputs"]}
    outputs = {t["name"]: t for t in g["outputs"]}
    for l in range(n_layers):
        for kind in ("key", "value"):
            past, out = inputs[kv[f"past_{kind}"] % l], outputs[kv[f"out_{kind}"] % l]
            assert past["shape"][1] == out["shape"][1] == kv["kv_heads"]
            assert past["shape"][3] == out["shape"][3] == kv["head_dim"]
            assert isinstance(past["shape"][2], str)  # symbolic cache length
            if kv["mode"] == "in_place":  # the present is the past's buffer
                assert out["shape"] == past["shape"]
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
def test_graph_inputs_match_manifest(role, manifest, bundle):
    """Graph input names, order, dtypes and dims (values and symbolic names) are the manifest's."""
    proto = onnx.load(str(bundle / f"{role}.onnx"), load_external_data=False)
    g = manifest["graphs"][role]
    declared = [(vi.name, *_declared(vi)) for vi in proto.graph.input]
    assert declared == [(t["name"], t["dtype"], t["shape"]) for t in g["inputs"]]
    assert [o.name for o in proto.graph.output] == [t["name"] for t in g["outputs"]]


@pytest.mark.parametrize("role", ROLES)
def test_graph_outputs_compatible_with_manifest(role, manifest, bundle):
    """Output dtype and rank agree, and every dim the graph fixes agrees with the manifest."""
    proto = onnx.load(str(bundle / f"{role}.onnx"), load_external_data=False)
    for vi, t in zip(proto.graph.output, manifest["graphs"][role]["outputs"]):
        dtype, dims = _declared(vi)
        assert dtype == t["dtype"] and len(dims) == len(t["shape"]), vi.name
        for d, m in zip(dims, t["shape"]):
            assert isinstance(d, str) or d == m, f"{role} {vi.name}: graph dims {dims}, manifest {t['shape']}"
            assert not isinstance(m, str) or d == m, f"{role} {vi.name}: graph dims {dims}, manifest {t['shape']}"


@pytest.mark.parametrize("role", ROLES)
def test_graph_outputs_declared_exactly_as_manifest(role, manifest, bundle):
    proto = onnx.load(str(bundle / f"{role}.onnx"), load_external_data=False)
    declared = [(vi.name, *_declared(vi)) for vi in proto.graph.output]
    assert declared == [(t["name"], t["dtype"], t["shape"]) for t in manifest["graphs"][role]["outputs"]]


def test_onnxruntime_sees_manifest_names(manifest, bundle):
    from conftest import OrtBundle

    graphs = OrtBundle(bundle)
    for role in ROLES:
        sess = graphs.session(role)
        g = manifest["graphs"][role]
        assert [i.name for i in sess.get_inputs()] == [t["name"] for t in g["inputs"]], role
        assert [o.name for o in sess.get_outputs()] == [t["name"] for t in g["outputs"]], role


@pytest.mark.parametrize("role,layers", [("backbone", 2), ("depth", 1)])
def test_node_names_are_hierarchical(role, layers, bundle, manifest):
    names = [n.name for n in onnx.load(str(bundle / f"{role}.onnx"), load_external_data=False).graph.node]
    fused = manifest["graphs"][role]["form"] == "fused"
    for l in range(layers):
        prefix = f"layers.{l}." if fused else f"/body/layers.{l}/attn/"
        assert any(n.startswith(prefix) for n in names), f"no node under {prefix} in {role}"
        if fused:
            assert f"layers.{l}.qkv_proj" in names and f"layers.{l}.attention" in names, l
        else:
            assert any(n.startswith(prefix + "q_proj/") and n.endswith("MatMul") for n in names), prefix
        assert any(f"layers.{l}" in n and "down_proj" in n for n in names), l


def test_codec_node_names_are_hierarchical(bundle):
    names = [n.name for n in onnx.load(str(bundle / "codec_decode.onnx")).graph.node]
    assert any(re.match(r"/.*decoder/ups\.0/", n) for n in names), names[:20]


def test_k1_manifest(tiny_bundle_k1):
    m = json.loads((tiny_bundle_k1 / MANIFEST).read_text())
    assert "depth" not in m["graphs"] and "depth.onnx" not in m["files"]
    assert m["constants"]["n_codebooks"] == 1 and m["constants"]["depth_layers"] == 0
    assert m["graphs"]["backbone"]["inputs"][0]["shape"] == ["batch", "seq", 1]
