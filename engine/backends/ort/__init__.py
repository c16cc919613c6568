"""The `ort` backend: generation and the codec decoder on ONNX Runtime (CPU); no PyTorch."""
from __future__ import annotations

from ...contract.bundle import Bundle
from .. import Opened
from .codec import OrtCodecDecoder
from .generator import OrtGenerator


def open_backend(bundle: Bundle, *, slots: int, max_len: int, threads: int, codec_threads: int,
                 max_frames: int) -> Opened:
    gen = OrtGenerator(bundle, slots, max_len, threads)
    try:
        return Opened(gen, OrtCodecDecoder(bundle, slots, max_frames, codec_threads))
    except BaseException:
        gen.close()
        raise
