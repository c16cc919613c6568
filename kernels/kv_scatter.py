"""Scatter a batch of new K/V entries into a preallocated multi-stream KV cache, in place.

Layout: ``cache[S, L, 2, H, T, D]`` (stream slot, layer, K/V, head, position, dim),
allocated once at its maximum size; ``new[B, L, 2, H, n, D]`` holds up to ``n``
fresh positions for each of ``B`` active streams. Row ``b`` writes
``new[b, :, :, :, :lengths[b]]`` to ``cache[slots[b], :, :, :, starts[b]:starts[b] + lengths[b]]``.

Index arithmetic of the kernel: merge ``(L, 2, H)`` into ``G`` head rows. For a
contiguous cache, head row ``g`` of slot ``s`` starts at ``(s * G + g) * T * D`` and
its positions ``[start, start + len)`` are the contiguous run
``[start * D, (start + len) * D)`` after it; the source run is ``[0, len * D)`` of
``new``'s head row ``(b * G + g)``. So the copy is one flat, coalesced run per
``(b, g)``, chunked over a second grid axis.
"""

from __future__ import annotations

import json

import torch

from ._common import HAS_TRITON, bench_row, default_device, time_ms, use_triton

BLOCK = 1024


def _check_shapes(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor, starts: torch.Tensor,
                  lengths: torch.Tensor | None) -> None:
    """Raise ValueError on mismatched shapes, dtypes or devices (no host sync)."""
    if cache.dim() != 6 or new.dim() != 6:
        raise ValueError(f"kv_scatter: cache must be [S, L, 2, H, T, D] and new [B, L, 2, H, n, D], "
                         f"got {tuple(cache.shape)} and {tuple(new.shape)}")
    if cache.shape[1:4] != new.shape[1:4] or cache.shape[5] != new.shape[5]:
        raise ValueError(f"kv_scatter: new {tuple(new.shape)} does not fit cache {tuple(cache.shape)} "
                         "(L, 2, H and D must match)")
    if new.dtype != cache.dtype or new.device != cache.device:
        raise ValueError(f"kv_scatter: new is {new.dtype} on {new.device} but cache is {cache.dtype} on "
                         f"{cache.device}; convert new with .to(cache) first")
    B = new.shape[0]
    for name, t in (("slots", slots), ("starts", starts), ("lengths", lengths)):
        if t is not None and (t.shape != (B,) or t.dtype != torch.int64):
            raise ValueError(f"kv_scatter: {name} must be int64 [{B}], got {t.dtype} {tuple(t.shape)}")


def check_ranges(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor, starts: torch.Tensor,
                 lengths: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """Validate every row's write and return it as host ints (one host sync).

    Args: as :func:`kv_scatter`.

    Returns:
        ``[(slot, start, length)]`` per batch row.

    Raises:
        ValueError: naming the row and the bad value, if a slot is outside
            ``[0, S)``, a start is negative, a length is outside ``[0, n]``, a
            write runs past ``T``, or two rows write to the same slot.
    """
    _check_shapes(cache, new, slots, starts, lengths)
    S, T, n = cache.shape[0], cache.shape[4], new.shape[4]
    lens = lengths.tolist() if lengths is not None else [n] * new.shape[0]
    rows = list(zip(slots.tolist(), starts.tolist(), lens))
    seen: dict[int, int] = {}
    for b, (slot, start, length) in enumerate(rows):
        if not 0 <= slot < S:
            raise ValueError(f"kv_scatter: slots[{b}]={slot} is outside the cache's {S} slots [0, {S})")
        if not 0 <= length <= n:
            raise ValueError(f"kv_scatter: lengths[{b}]={length} is outside [0, {n}] (new holds {n} positions)")
        if start < 0 or start + length > T:
            raise ValueError(f"kv_scatter: row {b} writes positions [{start}, {start + length}) of slot {slot}, "
                             f"outside the cache's {T} positions; evict or reset the stream first")
        if slot in seen:
            raise ValueError(f"kv_scatter: rows {seen[slot]} and {b} both write slot {slot}; one row per stream")
        seen[slot] = b
    return rows


def kv_scatter_reference(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor, starts: torch.Tensor,
                         lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch scatter, in place, with full range checks (host sync).

    Args and Returns: as :func:`kv_scatter`.
    """
    for b, (slot, start, length) in enumerate(check_ranges(cache, new, slots, starts, lengths)):
        cache[slot, :, :, :, start:start + length] = new[b, :, :, :, :length]  # [L, 2, H, len, D]
    return cache


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _kv_scatter_kernel(cache_ptr, new_ptr, slots_ptr, starts_ptr, lengths_ptr, G, T, N, D,
                           HAS_LENGTHS: tl.constexpr, BLOCK: tl.constexpr):
        bg = tl.program_id(0).to(tl.int64)  # b * G + g
        b = bg // G
        g = bg % G
        slot = tl.load(slots_ptr + b).to(tl.int64)
        start = tl.load(starts_ptr + b).to(tl.int64)
        length = tl.load(lengths_ptr + b).to(tl.int64) if HAS_LENGTHS else N
        offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
        mask = offs < length * D
        src = new_ptr + bg * N * D + offs
        dst = cache_ptr + (slot * G + g) * T * D + start * D + offs
        tl.store(dst, tl.load(src, mask=mask), mask=mask)


def kv_scatter_triton(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor, starts: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the Triton kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``); ranges are NOT checked.

    Args and Returns: as :func:`kv_scatter`; ``cache`` must be contiguous.
    """
    _check_shapes(cache, new, slots, starts, lengths)
    if not cache.is_contiguous():
        raise ValueError("kv_scatter: cache must be contiguous (it is written in place); allocate it with torch.empty")
    _, L, two, H, T, D = cache.shape
    B, n = new.shape[0], new.shape[4]
    if B == 0 or n == 0:
        return cache
    new = new.contiguous()
    G = L * two * H
    grid = (B * G, triton.cdiv(n * D, BLOCK))
    _kv_scatter_kernel[grid](cache, new, slots, starts, lengths if lengths is not None else slots,
                             G, T, n, D, HAS_LENGTHS=lengths is not None, BLOCK=BLOCK)
    return cache


def kv_scatter(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor, starts: torch.Tensor,
               lengths: torch.Tensor | None = None, check: bool = False) -> torch.Tensor:
    """Write each stream's new K/V positions into its cache slot, in place.

    Triton on CUDA (no host sync; inputs assumed valid unless ``check=True``),
    else the torch reference (which always checks ranges).

    Args:
        cache: ``[S, L, 2, H, T, D]``, contiguous, modified in place.
        new: ``[B, L, 2, H, n, D]``, same dtype and device as ``cache``.
        slots: int64 ``[B]``, distinct cache slot of each row, in ``[0, S)``.
        starts: int64 ``[B]``, first position to write in that slot.
        lengths: int64 ``[B]`` in ``[0, n]``: how many of the ``n`` new positions
            are real (ragged batches); ``None`` means all ``n``.
        check: on CUDA, run :func:`check_ranges` first (costs a host sync).

    Returns:
        ``cache`` (the same tensor).

    Raises:
        ValueError: on a shape mismatch, or (reference / ``check``) a bad range.

    Example:
        >>> cache = torch.zeros(2, 1, 2, 1, 4, 1)
        >>> new = torch.ones(1, 1, 2, 1, 2, 1)
        >>> kv_scatter(cache, new, torch.tensor([1]), torch.tensor([2]))[1, 0, 0, 0, :, 0].tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    if not use_triton(cache, new, slots, starts):
        return kv_scatter_reference(cache, new, slots, starts, lengths)
    if check:
        check_ranges(cache, new, slots, starts, lengths)
    return kv_scatter_triton(cache, new, slots, starts, lengths)


def random_inputs(S=6, L=2, H=2, T=32, D=16, B=4, n=5, dtype=torch.float32, device="cpu", seed=0):
    """Seeded valid inputs: distinct slots, ragged lengths, starts that fit."""
    g = torch.Generator().manual_seed(seed)
    cache = torch.randn(S, L, 2, H, T, D, generator=g).to(dtype).to(device)  # [S, L, 2, H, T, D]
    new = torch.randn(B, L, 2, H, n, D, generator=g).to(dtype).to(device)  # [B, L, 2, H, n, D]
    slots = torch.randperm(S, generator=g)[:B]  # [B]
    lengths = torch.randint(0, n + 1, (B,), generator=g)  # [B]
    starts = (torch.rand(B, generator=g) * (T - lengths + 1)).long()  # [B]
    return cache, new, slots.to(device), starts.to(device), lengths.to(device)


def validate(dtype: torch.dtype = torch.float32, device=None, seed: int = 0, **sizes) -> None:
    """Check the kernel against the reference; a copy must match bit for bit.

    Args:
        dtype, seed: cache dtype and seed; ``sizes`` go to :func:`random_inputs`.
        device: where to run; default CUDA if available (CPU needs ``TRITON_INTERPRET=1``).
    """
    device = torch.device(device) if device is not None else default_device()
    cache, new, slots, starts, lengths = random_inputs(dtype=dtype, device=device, seed=seed, **sizes)
    full_starts = starts.clamp(max=cache.shape[4] - new.shape[4])  # [B], room for all n positions
    for lens, st in ((lengths, starts), (None, full_starts)):
        want = kv_scatter_reference(cache.clone(), new, slots, st, lens)
        got = kv_scatter_triton(cache.clone(), new, slots, st, lens)
        which = "None" if lens is None else "given"
        assert torch.equal(got, want), f"kv_scatter: kernel != reference (lengths {which})"


def bench(S: int = 16, L: int = 16, H: int = 8, T: int = 2048, D: int = 64, B: int = 16, n: int = 1,
          dtype: torch.dtype = torch.bfloat16, device=None) -> dict:
    """Time :func:`kv_scatter`; bytes = 2 * (new positions read + written) + index reads.

    Returns:
        A benchmark row (see ``_common.bench_row``).
    """
    device = torch.device(device) if device is not None else default_device()
    cache = torch.zeros(S, L, 2, H, T, D, dtype=dtype, device=device)  # [S, L, 2, H, T, D]
    new = torch.randn(B, L, 2, H, n, D, device=device).to(dtype)  # [B, L, 2, H, n, D]
    slots = torch.arange(B, device=device) % S  # [B]
    starts = torch.zeros(B, dtype=torch.int64, device=device)  # [B]
    impl = "triton" if use_triton(cache) else "reference"
    nbytes = 2 * new.numel() * new.element_size() + 2 * B * 8
    samples = time_ms(lambda: kv_scatter(cache, new, slots, starts), device)
    config = {"S": S, "L": L, "H": H, "T": T, "D": D, "B": B, "n": n, "dtype": str(dtype)}
    return bench_row("kv_scatter", impl, device, config, nbytes, samples)


if __name__ == "__main__":  # python -m cadenza.kernels.kv_scatter
    if use_triton(torch.empty(0, device=default_device())):
        for dt in (torch.float32, torch.bfloat16):
            validate(dtype=dt)
        print("validate: ok")
    for n_new in (1, 256):  # one decode step, one prefill chunk
        row = bench(B=16 if n_new == 1 else 4, n=n_new)
        print(json.dumps({k: v for k, v in row.items() if k != "samples_ms"}))
