"""Tests for cadenza.kernels.penalty: CTRL repetition penalty, reference against plain
Python, Triton kernel (interpreter on CPU) against the reference."""

import pytest
import torch

from cadenza.kernels import penalty as pen
from cadenza.kernels.penalty import apply_repetition_penalty, apply_repetition_penalty_reference


def py_penalty(logits: list[list[float]], history: list[list[int]], penalty: list[float]) -> list[list[float]]:
    """The rule in plain Python: each distinct seen id once, divide positives, multiply the rest."""
    out = [row[:] for row in logits]
    for b, ids in enumerate(history):
        for i in {i for i in ids if i >= 0}:
            x = logits[b][i]
            out[b][i] = x / penalty[b] if x > 0 else x * penalty[b]
    return out


def run(impl, logits, history, penalty):
    name, device = impl
    x = torch.tensor(logits, dtype=torch.float32, device=device)
    fn = pen.apply_repetition_penalty_triton if name == "triton" else apply_repetition_penalty_reference
    out = fn(x, torch.tensor(history, dtype=torch.int64, device=device), torch.tensor(penalty, device=device))
    assert out is x, "must work in place and return the same tensor"
    return x.cpu()


def test_handcrafted(impl):
    logits = [[2.0, -1.0, 0.5, 0.0, 4.0], [1.0, 1.0, -3.0, 2.0, 0.0]]
    history = [[0, 1, -1, 0, 0], [2, 3, 3, -1, -1]]  # duplicates count once, -1 is empty
    want = [[1.0, -2.0, 0.5, 0.0, 4.0], [1.0, 1.0, -4.5, 2.0 / 1.5, 0.0]]
    torch.testing.assert_close(run(impl, logits, history, [2.0, 1.5]), torch.tensor(want))


def test_random_against_python(impl):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 50, generator=g) * 3).tolist()
    history = torch.randint(-1, 50, (4, 30), generator=g).tolist()
    penalty = [1.0, 1.3, 2.0, 0.8]
    torch.testing.assert_close(run(impl, logits, history, penalty), torch.tensor(py_penalty(logits, history, penalty)))


def test_empty_history_changes_nothing(impl):
    logits = [[1.0, -2.0, 3.0]]
    assert run(impl, logits, [[-1, -1]], [3.0]).tolist() == logits


def test_out_of_range_ids_raise():
    with pytest.raises(ValueError, match=r"history ids must be in \[-1, 3\)"):
        apply_repetition_penalty(torch.zeros(1, 3), torch.tensor([[0, 3]]), torch.tensor([1.5]))
    with pytest.raises(ValueError, match="must be int64"):
        apply_repetition_penalty(torch.zeros(1, 3), torch.tensor([[0]], dtype=torch.int32), torch.tensor([1.5]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("H", [1, 64, 300])
def test_kernel_matches_reference(kernel_device, dtype, H):
    pen.validate(B=8, V=500, H=H, dtype=dtype, device=kernel_device, seed=H)
