"""Counter-based uniforms for on-device sampling, with no host RNG and no host sync.

``counter_uniform(seed, step)`` is a pure function of two integers per row, written
in int64 torch ops, so it gives the same bits on CPU and CUDA and inside a CUDA
graph. It is the torch twin of the run time's numpy generator
(``cadenza.engine.runtime.rng.counter_uniform``): the same splitmix64 hash
(Steele, Lea and Flood, 2014) on the same integers, bit for bit (tested), so a
stream sampled on the torch backend draws exactly what it draws on ``ort``.

int64 tensors wrap on overflow (two's complement) on CPU and CUDA, which is the
unsigned 64-bit arithmetic splitmix64 needs; right shifts are made logical by
masking off the sign-extended bits.
"""

from __future__ import annotations

import torch

_U64 = 1 << 64
# splitmix64 constants as signed int64 (same low 64 bits as the unsigned ones).
GAMMA = 0x9E3779B97F4A7C15 - _U64
MIX1 = 0xBF58476D1CE4E5B9 - _U64
MIX2 = 0x94D049BB133111EB - _U64


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical (unsigned) right shift of an int64 tensor by ``s`` bits."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser: a bijective avalanche of 64-bit integers.

    Args:
        z: int64 tensor, any shape.

    Returns:
        int64 tensor of the same shape.
    """
    z = (z ^ _shr(z, 30)) * MIX1
    z = (z ^ _shr(z, 27)) * MIX2
    return z ^ _shr(z, 31)


def counter_uniform(seed: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """One uniform float32 in [0, 1) per row, from ``(seed, step)`` alone.

    ``u = top24(mix64(mix64(seed) + (step + 1) * GAMMA)) * 2**-24``: the
    ``step``-th output of a splitmix64 stream whose state starts at
    ``mix64(seed)`` (pre-mixing makes neighbouring seeds unrelated streams).
    24 bits make every value exactly representable in float32; the largest is
    ``1 - 2**-24``, so ``u < 1`` always.

    Args:
        seed: int64 ``[B]``, one stream per row (any int64 value).
        step: int64 ``[B]``, the decode step (counter) of each row.

    Returns:
        float32 ``[B]`` on ``seed``'s device.

    Example:
        >>> u = counter_uniform(torch.tensor([7, 7]), torch.tensor([0, 1]))
        >>> bool((u >= 0).all() and (u < 1).all())
        True
    """
    if seed.dtype != torch.int64 or step.dtype != torch.int64:
        raise TypeError(f"counter_uniform: seed and step must be int64, got {seed.dtype} and {step.dtype}")
    state = mix64(seed) + (step + 1) * GAMMA  # [B], wraps mod 2**64
    bits = _shr(mix64(state), 40)  # [B], top 24 bits
    return bits.to(torch.float32) * (2.0 ** -24)
