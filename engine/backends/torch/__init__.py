"""The `torch` and `torch-cuda` backends: the bundle's PyTorch weights as a static-buffer generator.

`torch` runs eagerly on the CPU (the reference the other backends are checked
against) with the ONNX Runtime codec decoder; `torch-cuda` captures one CUDA
graph per frame and decodes on its own CUDA stream. Importing this package
imports torch.
"""
from __future__ import annotations

from ...contract.bundle import Bundle
from .. import Opened


def open_cpu(bundle: Bundle, *, slots: int, max_len: int, threads: int, codec_threads: int,
             max_frames: int, spinning: bool = False) -> Opened:
    """PyTorch eager on the CPU (`spinning` is ONNX Runtime's; PyTorch's own threads are not changed)."""
    from ..ort.codec import OrtCodecDecoder
    from .generator import TorchGenerator

    gen = TorchGenerator(bundle, slots, max_len, "cpu", threads=threads)
    try:
        return Opened(gen, OrtCodecDecoder(bundle, slots, max_frames, codec_threads))
    except BaseException:
        gen.close()
        raise


def open_cuda(bundle: Bundle, *, slots: int, max_len: int, threads: int, codec_threads: int,
              max_frames: int, spinning: bool = False) -> Opened:
    from .codec import TorchBatchDecoder, TorchCodecDecoder
    from .generator import TorchGenerator

    gen = TorchGenerator(bundle, slots, max_len, "cuda", threads=threads)
    try:
        return Opened(gen, TorchBatchDecoder(TorchCodecDecoder(gen.model.codec, "cuda", slots, max_frames)))
    except BaseException:
        gen.close()
        raise
