"""The torch codec decoder: seam-free streaming, parity with the ONNX Runtime decoder, and (on a GPU)
two chunks in flight on its own CUDA stream."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")


def test_torch_codec_streams_seam_free(tiny_model):
    from cadenza.engine.backends.torch.codec import TorchCodecDecoder

    dec = TorchCodecDecoder(tiny_model.codec, "cpu", max_batch=2, max_frames=4)
    codes = np.random.default_rng(1).integers(0, 64, (2, 4, 9))
    states = dec.zero_states(2)
    pieces, f = [], 0
    for n in (1, 2, 4, 2):
        t = dec.submit(codes[:, :, f:f + n], states)
        pieces.append(dec.result(t).copy())
        f += n
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), dec.decode_offline(codes), atol=1e-5)
    t0 = dec.submit(codes[:, :, :1], states)
    dec.submit(codes[:, :, :1], states)
    dec.submit(codes[:, :, :1], states)
    with pytest.raises(RuntimeError, match="reused"):
        dec.result(t0)
    with pytest.raises(ValueError, match="max_frames"):
        dec.submit(codes[:, :, :5], states)


@pytest.mark.parametrize("max_batch", [2, 1], ids=["one-group", "two-groups-pipelined"])
def test_torch_batch_decoder_matches_ort(tiny_bundle, tiny_model, max_batch):
    from cadenza.engine.backends.ort.codec import OrtCodecDecoder
    from cadenza.engine.backends.torch.codec import TorchBatchDecoder, TorchCodecDecoder
    from cadenza.engine.contract.bundle import Bundle
    from cadenza.engine.runtime.codec_worker import CodecState, DecodeJob

    ort_dec = OrtCodecDecoder(Bundle.load(tiny_bundle), 2, 4)
    t_dec = TorchBatchDecoder(TorchCodecDecoder(tiny_model.codec, "cpu", max_batch, 4))
    assert t_dec.state_shapes == ort_dec.state_shapes
    codes = np.random.default_rng(2).integers(0, 64, (2, 4, 7))
    results = []
    for dec in (ort_dec, t_dec):
        states = [CodecState.zeros(dec.state_shapes) for _ in range(2)]
        pcm = []
        for lo, hi in ((0, 3), (3, 7)):
            jobs = [DecodeJob(codes[i, :, lo:hi], states[i], lambda x: None) for i in range(2)]
            pcm.append(dec.decode(jobs))
        results.append([np.concatenate([p[i] for p in pcm]) for i in range(2)])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_cuda_codec_double_buffer_equals_offline():
    from cadenza.engine.backends.torch.codec import TorchCodecDecoder
    from cadenza.export.model.config import TTSConfig
    from cadenza.export.model.model import TTSModel

    model = TTSModel.from_config(TTSConfig.from_name("tiny"))
    dec = TorchCodecDecoder(model.codec, "cuda", max_batch=2, max_frames=4)
    codes = np.random.default_rng(1).integers(0, 64, (2, 4, 12))
    states = dec.zero_states(2)
    tickets = [dec.submit(codes[:, :, f:f + 4], states) for f in (0, 4)]  # two in flight
    pieces = [dec.result(t).copy() for t in tickets]
    pieces.append(dec.result(dec.submit(codes[:, :, 8:12], states)).copy())
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), dec.decode_offline(codes), atol=1e-4)
