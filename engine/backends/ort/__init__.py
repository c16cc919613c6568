"""The `ort` backend: generation and the codec decoder on ONNX Runtime (CPU); no PyTorch."""
from __future__ import annotations

from ...contract.bundle import Bundle
from .. import Opened
from .codec import OrtCodecDecoder, OrtWindowDecoder
from .generator import OrtGenerator


def open_codec(bundle: Bundle, slots: int, max_frames: int, threads: int):
    """The codec decoder the bundle's codec block asks for: carried state, or windows."""
    cls = OrtWindowDecoder if bundle.codec.kind == "window" else OrtCodecDecoder
    return cls(bundle, slots, max_frames, threads)


def open_backend(bundle: Bundle, *, slots: int, max_len: int, threads: int, codec_threads: int,
                 max_frames: int, spinning: bool = False) -> Opened:
    gen = OrtGenerator(bundle, slots, max_len, threads, spinning)
    try:
        return Opened(gen, open_codec(bundle, slots, max_frames, codec_threads))
    except BaseException:
        gen.close()
        raise
