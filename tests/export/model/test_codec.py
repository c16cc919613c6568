"""Streaming codec decode against one-shot decode, and causality.

The decoder carries every conv's left context and every transposed conv's
overlap tail as state, so decoding frames in chunks (states fed back by the
manifest's `state` list: input name -> output name) must equal decoding all
frames at once from zero state, and appending frames must never change
samples already produced. Checked in ONNX Runtime and in PyTorch.
Tolerances (max-abs on PCM in [-1, 1]): 1e-5 streamed vs offline, 1e-6 for
causality.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

STREAM_TOL = 1e-5
CAUSAL_TOL = 1e-6
FRAMES = 8
CHUNKINGS = [
    pytest.param([1] * FRAMES, id="frame_by_frame"),
    pytest.param([1, 2, 5], id="uneven_1_2_5"),
    pytest.param([3, 1, 4], id="uneven_3_1_4"),
    pytest.param([FRAMES], id="one_chunk"),
]


@pytest.fixture(scope="module")
def decode_entry(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())["graphs"]["codec_decode"]


def _codes(model, B, frames, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.codebook_size, (B, model.cfg.n_codebooks, frames), generator=g)  # [B, K, F]


def _zero_states(entry, B):
    """Zero state per the manifest: input name -> [B, *shape]."""
    return {s["input"]: np.zeros([B, *s["shape"]], dtype=np.float32) for s in entry["state"]}


def _onnx_stream(ort_bundle, entry, codes: np.ndarray, chunks: list[int]) -> np.ndarray:
    assert sum(chunks) == codes.shape[-1]
    states = _zero_states(entry, codes.shape[0])
    pcm, f = [], 0
    for n in chunks:
        out = ort_bundle.run("codec_decode", {"codes": codes[..., f:f + n], **states})
        states = {s["input"]: out[s["output"]] for s in entry["state"]}
        pcm.append(out["pcm"])
        f += n
    return np.concatenate(pcm, axis=-1)  # [B, F * hop]


def _max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def test_manifest_state_list_matches_decoder(decode_entry, tiny_model):
    shapes = tiny_model.codec.decoder.state_shapes()
    assert len(decode_entry["state"]) == len(shapes) > 0
    inputs = {t["name"] for t in decode_entry["inputs"]}
    outputs = {t["name"] for t in decode_entry["outputs"]}
    for s, shape in zip(decode_entry["state"], shapes):
        assert s["input"] in inputs and s["output"] in outputs
        assert tuple(s["shape"]) == shape


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_onnx_stream_equals_offline(chunks, tiny_model, tiny_ort, decode_entry):
    codes = _codes(tiny_model, 2, FRAMES, seed=3)
    hop = tiny_model.cfg.codec.hop
    streamed = _onnx_stream(tiny_ort, decode_entry, codes.numpy(), chunks)
    assert streamed.shape == (2, FRAMES * hop)
    with torch.no_grad():
        offline_torch = tiny_model.codec.decode(codes).numpy()
    offline_onnx = tiny_ort.run("codec_decode", {"codes": codes.numpy(), **_zero_states(decode_entry, 2)})["pcm"]
    assert _max_abs(streamed, offline_torch) <= STREAM_TOL
    assert _max_abs(streamed, offline_onnx) <= STREAM_TOL
    assert np.abs(offline_torch).max() > 1e-3, "decoded PCM is all silence: the comparison would be vacuous"


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_torch_stream_equals_offline(chunks, tiny_model):
    codec = tiny_model.codec
    codes = _codes(tiny_model, 1, FRAMES, seed=4)
    states, pcm, f = codec.decoder.zero_state(1), [], 0
    with torch.no_grad():
        for n in chunks:
            out, states = codec.decode_stream(codes[..., f:f + n], states)
            pcm.append(out)
            f += n
        offline = codec.decode(codes)
    assert _max_abs(torch.cat(pcm, dim=-1), offline) <= STREAM_TOL


@pytest.mark.parametrize("frames", [1, 4])
def test_onnx_decode_is_causal(frames, tiny_model, tiny_ort, decode_entry):
    """Decoding F + 3 frames leaves the first F * hop samples of an F-frame decode unchanged."""
    codes = _codes(tiny_model, 2, frames + 3, seed=5).numpy()
    hop = tiny_model.cfg.codec.hop
    short = tiny_ort.run("codec_decode", {"codes": codes[..., :frames], **_zero_states(decode_entry, 2)})["pcm"]
    long = tiny_ort.run("codec_decode", {"codes": codes, **_zero_states(decode_entry, 2)})["pcm"]
    assert short.shape[-1] == frames * hop and long.shape[-1] == (frames + 3) * hop
    assert _max_abs(long[:, : frames * hop], short) <= CAUSAL_TOL


@pytest.mark.parametrize("frames", [1, 4])
def test_torch_decode_is_causal(frames, tiny_model):
    codes = _codes(tiny_model, 1, frames + 3, seed=6)
    hop = tiny_model.cfg.codec.hop
    with torch.no_grad():
        short, long = tiny_model.codec.decode(codes[..., :frames]), tiny_model.codec.decode(codes)
    assert _max_abs(long[:, : frames * hop], short) <= CAUSAL_TOL


def test_onnx_stream_state_is_per_row(tiny_model, tiny_ort, decode_entry):
    """Rows of a streamed batch do not mix: row b of a batch-2 stream equals row b streamed alone."""
    codes = _codes(tiny_model, 2, FRAMES, seed=8).numpy()
    both = _onnx_stream(tiny_ort, decode_entry, codes, [2, 1, 5])
    for b in range(2):
        alone = _onnx_stream(tiny_ort, decode_entry, codes[b:b + 1], [2, 1, 5])
        assert _max_abs(both[b:b + 1], alone) <= STREAM_TOL
