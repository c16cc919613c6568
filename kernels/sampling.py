"""Fused token sampling: temperature, top-k, top-p and an inverse-CDF draw per row.

Exact semantics (those of ``cadenza.engine.runtime.sampler``, which the numpy run
time implements), per row ``b``:

1. ``temperature[b] <= 0``: greedy, ``argmax(logits[b])``, lowest index on ties.
2. else ``w = exp(x - max(x))`` with ``x = float32(logits[b]) / temperature[b]``
   (softmax without the division: every later step is scale-invariant).
3. Order tokens by ``w`` descending, ties by lower index first: ``ws``, ``order``;
   ``c = cumsum(ws)``.
4. Top-k: ``n = min(top_k, V)`` if ``top_k > 0`` else ``V``.
5. Top-p (only if ``top_p < 1``), on the top-k mass renormalised (as HF / vLLM):
   ``n = min(n, count(c[:n] < top_p * c[n-1]) + 1)``: the smallest prefix whose
   mass reaches ``top_p``, at least one token.
6. Tokens whose ``w`` underflowed to exactly 0 are never kept: ``n = min(n, count(ws > 0))``.
7. Draw: ``pick = min(count(c[:n] <= uniform[b] * c[n-1]), n - 1)``; the id is
   ``order[pick]``. ``uniform`` near 1 picks the last kept token.

The Triton kernel runs one program per row with the whole vocabulary in one block:
it bitonic-sorts ``(w, index)`` pairs packed into int64 keys (float bits of ``w >= 0``
are monotone as integers; the low 32 bits hold ``V - 1 - index`` so equal ``w`` put
the lower index first), then scans. ``V > MAX_TRITON_VOCAB`` uses the reference.
Only float rounding of the cumulative sums can make the two disagree, and only when
the draw lands within ~1e-6 of a boundary; ``validate`` accepts exactly those cases.
"""

from __future__ import annotations

import json

import torch

from ._common import HAS_TRITON, bench_row, default_device, next_power_of_2, time_ms, use_triton
from .penalty import apply_repetition_penalty
from .rng import counter_uniform

__all__ = ["MAX_TRITON_VOCAB", "apply_repetition_penalty", "bench", "counter_uniform", "sample",
           "sample_reference", "sample_triton", "validate"]

#: Largest vocabulary the one-block Triton kernel handles (sort in registers).
MAX_TRITON_VOCAB = 32768


def _check_args(logits, temperature, top_k, top_p, uniform) -> None:
    """Raise ValueError if the sampling arguments have the wrong shape or dtype."""
    if logits.dim() != 2:
        raise ValueError(f"sample: logits must be [B, V], got shape {tuple(logits.shape)}")
    B = logits.shape[0]
    for name, t in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("uniform", uniform)):
        if t.shape != (B,):
            raise ValueError(f"sample: {name} must have shape [{B}], got {tuple(t.shape)}")
    if top_k.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"sample: top_k must be int32 or int64, got {top_k.dtype}")


def _kept_count(ws: torch.Tensor, c: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Steps 4-6: how many of the sorted tokens each row keeps. ``ws``, ``c``: [B, V]."""
    V = ws.shape[1]
    pos = torch.arange(V, device=ws.device)  # [V]
    n = torch.where(top_k > 0, top_k.long().clamp(max=V), V)  # [B]
    total_k = c.gather(1, (n - 1)[:, None])  # [B, 1]
    below = (c < top_p[:, None].float() * total_k) & (pos < n[:, None])  # [B, V]
    n = torch.where(top_p < 1, torch.minimum(n, below.sum(1) + 1), n)  # [B]
    return torch.minimum(n, (ws > 0).sum(1)).clamp(min=1)  # [B]


def sample_reference(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                     top_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Plain torch sampling with the semantics in the module docstring (CPU or CUDA).

    Args:
        logits: float32 / bfloat16 / float16 ``[B, V]``.
        temperature: float32 ``[B]``; ``<= 0`` means greedy.
        top_k: int32 ``[B]``; ``0`` means off.
        top_p: float32 ``[B]``; ``>= 1`` means off.
        uniform: float32 ``[B]`` in [0, 1), e.g. from :func:`counter_uniform`.

    Returns:
        int64 ``[B]`` token ids.
    """
    _check_args(logits, temperature, top_k, top_p, uniform)
    raw = logits.float()  # [B, V]
    greedy = temperature <= 0  # [B]
    x = raw / torch.where(greedy, 1.0, temperature.float())[:, None]  # [B, V]
    w = torch.exp(x - x.amax(dim=1, keepdim=True))  # [B, V], max is 1
    ws, order = torch.sort(w, dim=1, descending=True, stable=True)  # [B, V], ties: lower index first
    c = torch.cumsum(ws, dim=1)  # [B, V]
    n = _kept_count(ws, c, top_k, top_p)  # [B]
    target = uniform[:, None].float() * c.gather(1, (n - 1)[:, None])  # [B, 1]
    pos = torch.arange(ws.shape[1], device=ws.device)  # [V]
    pick = torch.minimum(((c <= target) & (pos < n[:, None])).sum(1), n - 1)  # [B]
    ids = order.gather(1, pick[:, None]).squeeze(1)  # [B]
    return torch.where(greedy, raw.argmax(dim=1), ids)


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _bitonic_sort_desc(x, BLOCK: tl.constexpr, LOG_BLOCK: tl.constexpr):
        """Textbook bitonic sort, descending: one register gather per compare-exchange step.

        (``tl.sort`` gives the same result, but the CPU interpreter runs its reductions
        element by element, ~1000x slower; this version keeps the tests fast.)
        """
        pos = tl.arange(0, BLOCK)
        for stage in tl.static_range(1, LOG_BLOCK + 1):  # sorted runs of 2**stage
            for step in tl.static_range(stage):
                j: tl.constexpr = 1 << (stage - 1 - step)  # partner distance
                partner = tl.gather(x, pos ^ j, 0)
                descending_run = (pos & (1 << stage)) == 0  # the last stage is all descending
                take_max = ((pos & j) == 0) == descending_run
                x = tl.where(take_max, tl.maximum(x, partner), tl.minimum(x, partner))
        return x

    @triton.jit
    def _sample_kernel(logits_ptr, stride_b, temp_ptr, top_k_ptr, top_p_ptr, u_ptr, out_ptr,
                       V, BLOCK_V: tl.constexpr, LOG_V: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        pos = tl.arange(0, BLOCK_V)  # [BLOCK_V]
        valid = pos < V
        raw = tl.load(logits_ptr + row * stride_b + pos, mask=valid, other=float("-inf")).to(tl.float32)
        temp = tl.load(temp_ptr + row)
        top_k = tl.load(top_k_ptr + row).to(tl.int32)
        top_p = tl.load(top_p_ptr + row)
        u = tl.load(u_ptr + row)
        # Step 1: greedy id, lowest index among the maxima.
        greedy_id = tl.min(tl.where(raw == tl.max(raw, 0), pos, BLOCK_V), 0)
        # Step 2: unnormalised probabilities.
        x = raw / tl.where(temp > 0, temp, 1.0)
        w = tl.where(valid, tl.exp(x - tl.max(x, 0)), 0.0)  # [BLOCK_V]
        # Step 3: sort (w desc, index asc) via packed int64 keys; padding sorts last.
        key = (w.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (V - 1 - pos).to(tl.int64)
        key = _bitonic_sort_desc(tl.where(valid, key, -1), BLOCK_V, LOG_V)  # [BLOCK_V]
        ws = tl.where(valid, (key >> 32).to(tl.int32).to(tl.float32, bitcast=True), 0.0)
        order = V - 1 - (key & 0x7FFFFFFF).to(tl.int32)  # [BLOCK_V], V <= 2**31
        c = tl.cumsum(ws, 0)  # [BLOCK_V]
        # Steps 4-6: kept count.
        n = tl.where(top_k > 0, tl.minimum(top_k, V), V)
        total_k = tl.sum(tl.where(pos == n - 1, c, 0.0), 0)
        n_p = tl.sum(((c < top_p * total_k) & (pos < n)).to(tl.int32), 0) + 1
        n = tl.where(top_p < 1.0, tl.minimum(n, n_p), n)
        n = tl.maximum(tl.minimum(n, tl.sum((ws > 0).to(tl.int32), 0)), 1)
        # Step 7: inverse-CDF draw over the kept prefix.
        target = u * tl.sum(tl.where(pos == n - 1, c, 0.0), 0)
        pick = tl.minimum(tl.sum(((c <= target) & (pos < n)).to(tl.int32), 0), n - 1)
        sampled = tl.sum(tl.where(pos == pick, order, 0), 0)
        tl.store(out_ptr + row, tl.where(temp > 0, sampled, greedy_id).to(tl.int64))


def sample_triton(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                  top_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Launch the Triton kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``).

    Args and Returns: as :func:`sample_reference`; ``V <= MAX_TRITON_VOCAB``.
    """
    _check_args(logits, temperature, top_k, top_p, uniform)
    B, V = logits.shape
    if V > MAX_TRITON_VOCAB:
        raise ValueError(f"sample_triton: V={V} exceeds MAX_TRITON_VOCAB={MAX_TRITON_VOCAB}; use sample_reference")
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    out = torch.empty(B, dtype=torch.int64, device=logits.device)  # [B]
    block = next_power_of_2(V)
    _sample_kernel[(B,)](logits, logits.stride(0), temperature.float().contiguous(), top_k.contiguous(),
                         top_p.float().contiguous(), uniform.float().contiguous(), out, V,
                         BLOCK_V=block, LOG_V=block.bit_length() - 1, num_warps=4 if block <= 4096 else 16)
    return out


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
           top_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Sample one token id per row: Triton on CUDA, else the torch reference.

    No host sync on either path, so it can sit inside a CUDA graph.

    Args:
        logits: float32 / bfloat16 ``[B, V]``.
        temperature: float32 ``[B]``; ``<= 0`` means greedy argmax.
        top_k: int32 ``[B]``; ``0`` means off.
        top_p: float32 ``[B]``; ``1.0`` means off.
        uniform: float32 ``[B]`` in [0, 1), e.g. ``counter_uniform(seed, step)``.

    Returns:
        int64 ``[B]`` token ids, a new tensor owned by the caller.

    Example:
        >>> logits = torch.tensor([[0.0, 3.0, 1.0]])
        >>> sample(logits, torch.tensor([0.0]), torch.tensor([0], dtype=torch.int32),
        ...        torch.tensor([1.0]), torch.tensor([0.5])).tolist()
        [1]
    """
    if use_triton(logits) and logits.shape[1] <= MAX_TRITON_VOCAB:
        return sample_triton(logits, temperature, top_k, top_p, uniform)
    return sample_reference(logits, temperature, top_k, top_p, uniform)


def random_inputs(B: int, V: int, dtype: torch.dtype, device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded inputs mixing greedy, top-k, top-p and plain rows (for validate / bench / tests)."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, V, generator=g) * 3).to(dtype)  # [B, V]
    temperature = torch.rand(B, generator=g) * 1.5  # [B]
    temperature[::5] = 0.0
    top_k = torch.randint(0, V + 1, (B,), generator=g, dtype=torch.int32)
    top_k[::2] = 0
    top_p = torch.rand(B, generator=g)  # [B]
    top_p[::3] = 1.0
    uniform = torch.rand(B, generator=g)  # [B]
    return tuple(t.to(device) for t in (logits, temperature, top_k, top_p, uniform))


def validate(B: int = 64, V: int = 1000, dtype: torch.dtype = torch.float32, device=None,
             seed: int = 0, delta: float = 1e-5) -> None:
    """Check :func:`sample_triton` against :func:`sample_reference`; raise AssertionError if not.

    Ids must match, except where the reference itself changes its answer when
    ``uniform`` or ``top_p`` moves by ``delta`` (a draw on a float-rounding boundary).

    Args:
        B, V, dtype, seed: input sizes, logits dtype and seed.
        device: where to run; default CUDA if available (CPU needs ``TRITON_INTERPRET=1``).
        delta: boundary width accepted for mismatches.
    """
    device = torch.device(device) if device is not None else default_device()
    logits, temperature, top_k, top_p, uniform = random_inputs(B, V, dtype, device, seed)
    got = sample_triton(logits, temperature, top_k, top_p, uniform)  # [B]
    want = sample_reference(logits, temperature, top_k, top_p, uniform)  # [B]
    ok = got == want  # [B]
    for du, dp in ((-delta, 0), (delta, 0), (0, -delta), (0, delta)):
        u2 = (uniform + du).clamp(0, 1 - 2 ** -24)
        ok |= got == sample_reference(logits, temperature, top_k, top_p + dp, u2)
    bad = (~ok).nonzero().flatten().tolist()
    assert not bad, f"sample: kernel != reference at rows {bad}: got {got[bad].tolist()}, want {want[bad].tolist()}"


def bench(B: int = 64, V: int = 4096, dtype: torch.dtype = torch.float32, device=None) -> dict:
    """Time :func:`sample` and report bandwidth; bytes = logits read + 4 scalars read + ids written.

    Returns:
        A benchmark row (see ``_common.bench_row``).
    """
    device = torch.device(device) if device is not None else default_device()
    args = random_inputs(B, V, dtype, device)
    impl = "triton" if use_triton(args[0]) and V <= MAX_TRITON_VOCAB else "reference"
    nbytes = args[0].numel() * args[0].element_size() + B * (4 * 4 + 8)
    samples = time_ms(lambda: sample(*args), device)
    return bench_row("sample", impl, device, {"B": B, "V": V, "dtype": str(dtype)}, nbytes, samples)


if __name__ == "__main__":  # python -m cadenza.kernels.sampling
    if use_triton(torch.empty(0, device=default_device())):
        for dt in (torch.float32, torch.bfloat16):
            validate(dtype=dt)
        print("validate: ok")
    for v in (2048, 32768):
        row = bench(V=v)
        print(json.dumps({k: val for k, val in row.items() if k != "samples_ms"}))
