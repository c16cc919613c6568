"""Fixtures for the kernel tests: run the Triton kernels on the CPU with the interpreter.

``TRITON_INTERPRET`` must be set before ``triton`` is imported, and before
``cadenza.kernels`` is (its kernels are decorated at import). If another conftest
or test module imports ``cadenza.kernels`` first, the interpreter tests skip and
say so; run ``TRITON_INTERPRET=1 pytest tests/kernels`` in that case.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

TRITON_MISSING = "triton is not installed (pip install triton); Triton kernels are tested only with it"


def _kernels():
    """Every Triton kernel object of cadenza.kernels."""
    from cadenza.kernels import penalty, sampling

    return [sampling._sample_kernel, penalty._penalty_kernel]


@pytest.fixture(scope="session")
def kernel_device() -> torch.device:
    """Where Triton kernels run: CPU under ``TRITON_INTERPRET=1``, else CUDA; skip otherwise."""
    pytest.importorskip("triton", reason=TRITON_MISSING)
    from cadenza.kernels._common import interpreting

    if interpreting():
        from triton.runtime.interpreter import InterpretedFunction

        if not all(isinstance(k, InterpretedFunction) for k in _kernels()):
            pytest.skip("cadenza.kernels was imported before TRITON_INTERPRET=1 was set, so its kernels "
                        "are compiled for a GPU; run `TRITON_INTERPRET=1 pytest tests/kernels`")
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip("TRITON_INTERPRET is off and there is no CUDA device to run Triton kernels on")


@pytest.fixture(params=["reference", "triton"])
def impl(request) -> tuple[str, torch.device]:
    """Run a behavioural test against both implementations: ``(name, device)``."""
    if request.param == "reference":
        return "reference", torch.device("cpu")
    return "triton", request.getfixturevalue("kernel_device")
