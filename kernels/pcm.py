"""PCM output kernels: float -> int16 conversion and chunk-boundary crossfade.

Conversion: ``int16(round(clip(x, -1, 1) * 32767))`` with ``round`` = round half
to even (``torch.round``; numpy: ``np.rint``). The scale is symmetric, so -1.0
maps to -32767 and -32768 is never produced. NaN becomes 0 (silence), +-inf
clips to +-32767.

Crossfade: ``y[i] = prev_tail[i] * w_out[i] + head[i] * w_in[i]`` with
``t[i] = (i + 0.5) / N`` (symmetric, no endpoint is exactly 0 or 1) and either
linear weights ``w_in = t, w_out = 1 - t`` (default; the two sum to 1, right for
overlapping decodes of the same audio, which are correlated) or equal-power
``w_in = sin(pi/2 t), w_out = cos(pi/2 t)`` (squares sum to 1; for uncorrelated
signals). Optionally fused with the int16 conversion.
"""

from __future__ import annotations

import json
import math

import torch

from ._common import HAS_TRITON, bench_row, default_device, time_ms, use_triton

BLOCK = 1024
SCALE = 32767.0


def float_to_int16_reference(x: torch.Tensor) -> torch.Tensor:
    """Plain torch conversion (semantics in the module docstring).

    Args:
        x: float tensor, any shape.

    Returns:
        int16 tensor of the same shape.
    """
    x = torch.nan_to_num(x.float(), nan=0.0).clamp(-1.0, 1.0)
    return torch.round(x * SCALE).to(torch.int16)


def crossfade_weights(N: int, equal_power: bool, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fade-out and fade-in weights ``(w_out, w_in)``, float32 ``[N]`` each."""
    t = (torch.arange(N, dtype=torch.float32, device=device) + 0.5) / N  # [N]
    if equal_power:
        return torch.cos(t * (math.pi / 2)), torch.sin(t * (math.pi / 2))
    return 1.0 - t, t


def crossfade_reference(prev_tail: torch.Tensor, head: torch.Tensor, equal_power: bool = False,
                        to_int16: bool = False) -> torch.Tensor:
    """Plain torch crossfade over the last dimension.

    Args and Returns: as :func:`crossfade`.
    """
    _check_crossfade(prev_tail, head)
    w_out, w_in = crossfade_weights(head.shape[-1], equal_power, head.device)  # [N], [N]
    y = prev_tail.float() * w_out + head.float() * w_in  # [..., N]
    return float_to_int16_reference(y) if to_int16 else y


def _check_crossfade(prev_tail: torch.Tensor, head: torch.Tensor) -> None:
    """Raise ValueError unless both are float tensors of one shape ``[..., N]``, N >= 1."""
    if prev_tail.shape != head.shape or head.dim() == 0 or head.shape[-1] == 0:
        raise ValueError(f"crossfade: prev_tail {tuple(prev_tail.shape)} and head {tuple(head.shape)} "
                         "must have the same non-empty shape [..., N]")
    if not (prev_tail.is_floating_point() and head.is_floating_point()):
        raise ValueError(f"crossfade: expected float audio, got {prev_tail.dtype} and {head.dtype}")


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _round_half_even(y):
        """Exact round-half-to-even for |y| < 2**31 without libdevice (portable to the interpreter)."""
        t = y.to(tl.int32)  # truncates toward zero
        f = y - t.to(tl.float32)  # exact fractional part, in (-1, 1)
        odd = (t & 1) != 0
        up = (f > 0.5) | ((f == 0.5) & odd)
        down = (f < -0.5) | ((f == -0.5) & odd)
        return t + up.to(tl.int32) - down.to(tl.int32)

    @triton.jit
    def _to_int16(y):
        y = tl.where(y != y, 0.0, y)  # NaN -> 0 (NaN is the only value unequal to itself)
        y = tl.minimum(tl.maximum(y, -1.0), 1.0)
        return _round_half_even(y * 32767.0).to(tl.int16)

    @triton.jit
    def _float_to_int16_kernel(x_ptr, out_ptr, numel, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
        mask = offs < numel
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, _to_int16(x), mask=mask)

    @triton.jit
    def _crossfade_kernel(prev_ptr, head_ptr, out_ptr, N, EQUAL_POWER: tl.constexpr, TO_INT16: tl.constexpr,
                          BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
        mask = i < N
        prev = tl.load(prev_ptr + row * N + i, mask=mask, other=0.0).to(tl.float32)
        head = tl.load(head_ptr + row * N + i, mask=mask, other=0.0).to(tl.float32)
        t = (i.to(tl.float32) + 0.5) / N
        if EQUAL_POWER:
            w_out = tl.cos(t * 1.5707963267948966)
            w_in = tl.sin(t * 1.5707963267948966)
        else:
            w_out = 1.0 - t
            w_in = t
        y = prev * w_out + head * w_in
        if TO_INT16:
            tl.store(out_ptr + row * N + i, _to_int16(y), mask=mask)
        else:
            tl.store(out_ptr + row * N + i, y, mask=mask)


def float_to_int16_triton(x: torch.Tensor) -> torch.Tensor:
    """Launch the conversion kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``). As :func:`float_to_int16`."""
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.int16, device=x.device)
    if x.numel():
        _float_to_int16_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), BLOCK=BLOCK)
    return out


def crossfade_triton(prev_tail: torch.Tensor, head: torch.Tensor, equal_power: bool = False,
                     to_int16: bool = False) -> torch.Tensor:
    """Launch the crossfade kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``). As :func:`crossfade`."""
    _check_crossfade(prev_tail, head)
    N = head.shape[-1]
    prev2, head2 = prev_tail.reshape(-1, N).contiguous(), head.reshape(-1, N).contiguous()  # [R, N]
    out = torch.empty(head.shape, dtype=torch.int16 if to_int16 else torch.float32, device=head.device)
    if prev2.shape[0]:
        grid = (prev2.shape[0], triton.cdiv(N, BLOCK))
        _crossfade_kernel[grid](prev2, head2, out, N, EQUAL_POWER=equal_power, TO_INT16=to_int16, BLOCK=BLOCK)
    return out


def float_to_int16(x: torch.Tensor) -> torch.Tensor:
    """Convert float audio in [-1, 1] to int16 PCM: clip, scale by 32767, round half to even.

    Args:
        x: float32 (or 16-bit float) tensor, any shape.

    Returns:
        int16 tensor of the same shape, a new tensor owned by the caller.

    Example:
        >>> float_to_int16(torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0])).tolist()
        [-32767, -32767, 0, 16384, 32767]
    """
    return float_to_int16_triton(x) if use_triton(x) else float_to_int16_reference(x)


def crossfade(prev_tail: torch.Tensor, head: torch.Tensor, equal_power: bool = False,
              to_int16: bool = False) -> torch.Tensor:
    """Blend the previous chunk's tail into the next chunk's head (Triton on CUDA).

    Args:
        prev_tail: float ``[B, N]`` (or ``[..., N]``), fades out.
        head: float, same shape, fades in.
        equal_power: sin/cos weights instead of linear ones.
        to_int16: also convert to int16 PCM (as :func:`float_to_int16`) in the same pass.

    Returns:
        float32 (or int16 with ``to_int16``) tensor of the same shape, newly allocated.

    Example:
        >>> crossfade(torch.ones(1, 2), torch.zeros(1, 2)).tolist()
        [[0.75, 0.25]]
    """
    if use_triton(prev_tail, head):
        return crossfade_triton(prev_tail, head, equal_power, to_int16)
    return crossfade_reference(prev_tail, head, equal_power, to_int16)


def validate(B: int = 4, N: int = 1500, device=None, seed: int = 0) -> None:
    """Check both kernels against the references, including values on rounding ties.

    float outputs: atol 1e-6 (float32 arithmetic, possibly fused multiply-add);
    int16 outputs: exact for the conversion, at most 1 LSB for the fused crossfade
    (a 1-ulp float difference can cross a rounding boundary).

    Args:
        B, N, seed: sizes and seed.
        device: where to run; default CUDA if available (CPU needs ``TRITON_INTERPRET=1``).
    """
    device = torch.device(device) if device is not None else default_device()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, generator=g) * 0.7  # [B, N], some beyond +-1
    ties = (torch.arange(-40, 41, dtype=torch.float32) + 0.5) / SCALE  # x * 32767 lands on k + 0.5 (or near)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0, -1.0, 0.0, -0.0])
    flat = torch.cat([x.flatten(), ties, special]).to(device)
    assert torch.equal(float_to_int16_triton(flat), float_to_int16_reference(flat)), "float_to_int16 mismatch"
    prev, head = x.to(device), torch.randn(B, N, generator=g).to(device) * 0.7  # [B, N]
    for equal_power in (False, True):
        want = crossfade_reference(prev, head, equal_power)
        torch.testing.assert_close(crossfade_triton(prev, head, equal_power), want, atol=1e-6, rtol=0)
        got16 = crossfade_triton(prev, head, equal_power, to_int16=True).int()
        diff = got16 - crossfade_reference(prev, head, equal_power, to_int16=True)
        assert diff.abs().max() <= 1, f"crossfade int16: off by {diff.abs().max().item()} LSB"


def bench(B: int = 16, N: int = 24000, device=None) -> dict:
    """Time the fused crossfade + int16 conversion; bytes = 2 float32 reads + 1 int16 write.

    Returns:
        A benchmark row (see ``_common.bench_row``).
    """
    device = torch.device(device) if device is not None else default_device()
    prev, head = torch.randn(B, N, device=device), torch.randn(B, N, device=device)  # [B, N]
    impl = "triton" if use_triton(prev) else "reference"
    samples = time_ms(lambda: crossfade(prev, head, to_int16=True), device)
    return bench_row("crossfade_int16", impl, device, {"B": B, "N": N}, B * N * (4 + 4 + 2), samples)


if __name__ == "__main__":  # python -m cadenza.kernels.pcm
    if use_triton(torch.empty(0, device=default_device())):
        validate()
        print("validate: ok")
    print(json.dumps({k: v for k, v in bench().items() if k != "samples_ms"}))
