"""Counter-based uniforms: the one random generator of every backend.

`counter_uniform(seed, counter)` is a pure function of two 64-bit integers, so
a stream's draws depend only on its seed and on how many draws it has made,
never on its batch neighbours, and the torch backend (`cadenza.kernels.rng`,
the same integer math in int64 tensors, usable inside a CUDA graph) draws the
very same numbers: a seed gives the same codes on every backend.

The hash is splitmix64 (Steele, Lea and Flood, 2014):
`u = top24(mix64(mix64(seed) + (counter + 1) * GAMMA)) * 2**-24`, the
`counter`-th output of a splitmix64 stream whose state starts at
`mix64(seed)` (pre-mixing makes neighbouring seeds unrelated streams). 24 bits
make every value exactly representable in float32, and `u < 1` always.
"""
from __future__ import annotations

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def counter_uniform(seed, counter) -> np.ndarray:
    """One float32 in [0, 1) per element of `seed` / `counter` (ints or int arrays, broadcast).

    Example:
        >>> counter_uniform([7, 7], [0, 1]).shape
        (2,)
    """
    s = np.asarray(seed, dtype=np.int64).astype(np.uint64)  # two's complement: any int64 seed
    c = np.asarray(counter, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        state = mix64(s) + (c + np.uint64(1)) * GAMMA
        bits = mix64(state) >> np.uint64(40)  # the top 24 bits
    return bits.astype(np.float32) * np.float32(2.0 ** -24)


def seed_int64(seed: int) -> int:
    """A seed of any size as the int64 with the same low 64 bits (what both generators take)."""
    s = int(seed) % (1 << 64)
    return s - (1 << 64) if s >= 1 << 63 else s
