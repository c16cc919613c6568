"""Repetition penalty (CTRL convention, as HF's ``RepetitionPenaltyLogitsProcessor``).

For every id that appears in a row's history: ``logit > 0 -> logit / penalty``,
else ``logit * penalty``. An id seen several times is penalised once. Arithmetic
is float32; the result is cast back to the logits dtype and written in place.

The Triton kernel runs one program per row over the whole history in one block:
all logits are gathered before any is written, so duplicate ids in the history
write the same value and cannot compound. Re-exported from ``sampling``.
"""

from __future__ import annotations

import json

import torch

from ._common import HAS_TRITON, bench_row, default_device, next_power_of_2, time_ms, tolerance, use_triton


def _check_args(logits: torch.Tensor, history_ids: torch.Tensor, penalty: torch.Tensor) -> None:
    """Raise ValueError if shapes or dtypes are wrong (no host sync)."""
    if logits.dim() != 2 or history_ids.dim() != 2 or history_ids.shape[0] != logits.shape[0]:
        raise ValueError(f"apply_repetition_penalty: need logits [B, V] and history_ids [B, H], "
                         f"got {tuple(logits.shape)} and {tuple(history_ids.shape)}")
    if history_ids.dtype != torch.int64:
        raise ValueError(f"apply_repetition_penalty: history_ids must be int64, got {history_ids.dtype}")
    if penalty.shape != (logits.shape[0],):
        raise ValueError(f"apply_repetition_penalty: penalty must be [{logits.shape[0]}], got {tuple(penalty.shape)}")


def _check_ids(history_ids: torch.Tensor, V: int) -> None:
    """Raise ValueError if a history id is outside [-1, V) (host sync)."""
    if history_ids.numel() and (history_ids.max() >= V or history_ids.min() < -1):
        raise ValueError(f"apply_repetition_penalty: history ids must be in [-1, {V}) (-1 = empty), got range "
                         f"[{history_ids.min().item()}, {history_ids.max().item()}]")


def apply_repetition_penalty_reference(logits: torch.Tensor, history_ids: torch.Tensor,
                                       penalty: torch.Tensor) -> torch.Tensor:
    """Plain torch repetition penalty, in place; checks the id range (host sync).

    Args:
        logits: float ``[B, V]``, modified in place.
        history_ids: int64 ``[B, H]``; ``-1`` marks an empty entry.
        penalty: float32 ``[B]``; ``1.0`` means off.

    Returns:
        ``logits`` (the same tensor).

    Raises:
        ValueError: if a history id is ``>= V`` or ``< -1``.
    """
    _check_args(logits, history_ids, penalty)
    _check_ids(history_ids, logits.shape[1])
    B, V = logits.shape
    index = torch.where(history_ids >= 0, history_ids, V)  # [B, H]; column V collects empties
    seen = torch.zeros(B, V + 1, dtype=torch.bool, device=logits.device)
    seen = seen.scatter_(1, index, True)[:, :V]  # [B, V]
    x = logits.float()  # [B, V]
    p = penalty.float()[:, None]  # [B, 1]
    penalised = torch.where(x > 0, x / p, x * p)  # [B, V]
    logits.copy_(torch.where(seen, penalised, x))
    return logits


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _penalty_kernel(logits_ptr, stride_l, hist_ptr, stride_h, penalty_ptr, H, BLOCK_H: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        h = tl.arange(0, BLOCK_H)  # [BLOCK_H]
        ids = tl.load(hist_ptr + row * stride_h + h, mask=h < H, other=-1)  # [BLOCK_H]
        seen = ids >= 0
        ptrs = logits_ptr + row * stride_l + ids
        x = tl.load(ptrs, mask=seen, other=0.0).to(tl.float32)  # [BLOCK_H], gathered before any store
        p = tl.load(penalty_ptr + row)
        y = tl.where(x > 0, x / p, x * p)
        tl.store(ptrs, y.to(logits_ptr.dtype.element_ty), mask=seen)


def apply_repetition_penalty_triton(logits: torch.Tensor, history_ids: torch.Tensor,
                                    penalty: torch.Tensor) -> torch.Tensor:
    """Launch the Triton kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``); ids are not checked.

    Args and Returns: as :func:`apply_repetition_penalty_reference`; ``logits`` must have
    unit stride along V.
    """
    _check_args(logits, history_ids, penalty)
    if logits.stride(1) != 1:
        raise ValueError("apply_repetition_penalty: logits must be contiguous along V (it is written in place)")
    B, H = history_ids.shape
    if H == 0:
        return logits
    hist = history_ids.contiguous()
    _penalty_kernel[(B,)](logits, logits.stride(0), hist, hist.stride(0), penalty.float().contiguous(), H,
                          BLOCK_H=next_power_of_2(H))
    return logits


def apply_repetition_penalty(logits: torch.Tensor, history_ids: torch.Tensor, penalty: torch.Tensor,
                             check: bool = False) -> torch.Tensor:
    """Penalise every logit whose id appears in the row's history, in place.

    Triton on CUDA (no host sync; ids assumed valid unless ``check=True``), else
    the reference (which always checks ids).

    Args:
        logits: float32 / bfloat16 ``[B, V]``, modified in place.
        history_ids: int64 ``[B, H]``, previously generated ids; ``-1`` = empty.
        penalty: float32 ``[B]``; ``1.0`` is off, ``> 1`` discourages repeats.
        check: on CUDA, validate the id range first (costs a host sync).

    Returns:
        ``logits`` (the same tensor, for chaining).

    Example:
        >>> x = torch.tensor([[2.0, -1.0, 0.5]])
        >>> apply_repetition_penalty(x, torch.tensor([[0, 1, -1]]), torch.tensor([2.0])).tolist()
        [[1.0, -2.0, 0.5]]
    """
    if not use_triton(logits, history_ids, penalty):
        return apply_repetition_penalty_reference(logits, history_ids, penalty)
    if check:
        _check_ids(history_ids, logits.shape[1])
    return apply_repetition_penalty_triton(logits, history_ids, penalty)


def validate(B: int = 16, V: int = 1000, H: int = 64, dtype: torch.dtype = torch.float32,
             device=None, seed: int = 0) -> None:
    """Check the kernel against the reference (duplicates and empties included).

    Args:
        B, V, H, dtype, seed: sizes, logits dtype and seed.
        device: where to run; default CUDA if available (CPU needs ``TRITON_INTERPRET=1``).
    """
    device = torch.device(device) if device is not None else default_device()
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, V, generator=g) * 3).to(dtype).to(device)  # [B, V]
    hist = torch.randint(-1, V, (B, H), generator=g).to(device)  # [B, H], duplicates and -1s
    penalty = (1 + torch.rand(B, generator=g)).to(device)  # [B]
    want = apply_repetition_penalty_reference(logits.clone(), hist, penalty)
    got = apply_repetition_penalty_triton(logits.clone(), hist, penalty)
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def bench(B: int = 64, V: int = 4096, H: int = 256, dtype: torch.dtype = torch.float32, device=None) -> dict:
    """Time :func:`apply_repetition_penalty`; bytes = ids read + logits gathered and scattered + penalties.

    Returns:
        A benchmark row (see ``_common.bench_row``).
    """
    device = torch.device(device) if device is not None else default_device()
    logits = torch.randn(B, V, device=device).to(dtype)  # [B, V]
    hist = torch.randint(0, V, (B, H), device=device)  # [B, H]
    penalty = torch.full((B,), 1.1, device=device)  # [B]
    impl = "triton" if use_triton(logits, hist, penalty) else "reference"
    nbytes = B * H * (8 + 2 * logits.element_size()) + B * 4
    samples = time_ms(lambda: apply_repetition_penalty(logits, hist, penalty), device)
    return bench_row("repetition_penalty", impl, device, {"B": B, "V": V, "H": H, "dtype": str(dtype)},
                     nbytes, samples)


if __name__ == "__main__":  # python -m cadenza.kernels.penalty
    if use_triton(torch.empty(0, device=default_device())):
        for dt in (torch.float32, torch.bfloat16):
            validate(dtype=dt)
        print("validate: ok")
    row = bench()
    print(json.dumps({k: v for k, v in row.items() if k != "samples_ms"}))
