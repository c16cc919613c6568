"""Shared helpers for the kernel files: Triton detection, dispatch, tolerances, timing.

Each kernel file (``sampling.py``, ``penalty.py``) follows llm.c's
``dev/cuda`` pattern: a plain torch reference, a Triton kernel, ``validate()``
(kernel against reference with a dtype-dependent tolerance) and ``bench()``
(median time and back-of-envelope bandwidth). This module holds what they share.

Triton kernels also run on the CPU under the Triton interpreter: set
``TRITON_INTERPRET=1`` *before* ``triton`` is first imported (the choice between
interpreter and compiler is made when a kernel is decorated, i.e. at import).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

try:  # Triton is optional: without it every public function uses the reference.
    import triton

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    HAS_TRITON = False

#: Set ``CADENZA_NO_TRITON=1`` to force the torch reference even on CUDA.
NO_TRITON_ENV = "CADENZA_NO_TRITON"


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the public dispatchers should launch the Triton kernel.

    Args:
        tensors: the tensors the kernel would read or write.

    Returns:
        True when Triton is importable, not disabled by ``CADENZA_NO_TRITON=1``,
        and every tensor lives on a CUDA device; False otherwise.
    """
    if not HAS_TRITON or os.environ.get(NO_TRITON_ENV) == "1":
        return False
    return all(t.is_cuda for t in tensors)


def interpreting() -> bool:
    """Whether Triton kernels are (to be) run by the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= ``n`` (and >= 1): Triton block sizes must be powers of two."""
    return 1 << max(int(n) - 1, 0).bit_length()


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """Comparison tolerance ``(atol, rtol)`` for kernel-vs-reference checks.

    Args:
        dtype: dtype of the compared tensors (or of the inputs they came from).

    Returns:
        ``(atol, rtol)``: tight for float32, looser for 16-bit floats, zero for
        integers (copies and integer outputs must match exactly).
    """
    if dtype == torch.float32:
        return 1e-5, 1e-5
    if dtype == torch.float16:
        return 1e-3, 1e-3
    if dtype == torch.bfloat16:
        return 1e-2, 1e-2
    return 0.0, 0.0


def device_name(device: torch.device) -> str:
    """Human-readable name of ``device`` for benchmark rows."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def time_ms(fn: Callable[[], object], device: torch.device,
            warmup: int = 10, iters: int = 50) -> list[float]:
    """Time ``fn`` after a warm-up, synchronising around each timed call.

    Args:
        fn: the call to time (no arguments).
        device: where ``fn`` runs; CUDA uses events, CPU ``perf_counter``.
        warmup: untimed calls first (compilation, autotuning, caches).
        iters: timed calls.

    Returns:
        One duration in milliseconds per timed call.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def bench_row(kernel: str, impl: str, device: torch.device, config: dict,
              nbytes: int, samples_ms: list[float]) -> dict:
    """One JSON-able benchmark row: median, spread and achieved bandwidth.

    Args:
        kernel: kernel name, e.g. ``"sample"``.
        impl: ``"triton"`` or ``"reference"``.
        device: where it ran.
        config: the sizes and dtypes it ran with (batch size included).
        nbytes: back-of-envelope bytes moved per call (reads + writes).
        samples_ms: raw timings from :func:`time_ms`.

    Returns:
        A dict with ``median_ms``, ``min_ms``, ``max_ms``, ``gb_s`` (bytes over
        median time) and the raw samples.
    """
    median = statistics.median(samples_ms)
    return {
        "kernel": kernel, "impl": impl, "device": device_name(device),
        "machine": platform.node(), "config": config, "bytes": nbytes,
        "median_ms": median, "min_ms": min(samples_ms), "max_ms": max(samples_ms),
        "gb_s": nbytes / (median * 1e-3) / 1e9, "samples_ms": samples_ms,
    }


def default_device() -> torch.device:
    """CUDA when available, else CPU (for ``validate`` / ``bench`` defaults)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
