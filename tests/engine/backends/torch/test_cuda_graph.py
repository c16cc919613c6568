"""The CUDA-graph wrapper: eager fallback, shape checks, warm-up / capture / replay order, buckets.

On the CPU the wrapper runs eagerly but still checks shapes; `SimulatedRuntime`
stands in for the CUDA calls so the capture logic (static inputs copied in,
static outputs overwritten, largest bucket first, one pool) is exercised here.
The `gpu` tests run the same checks on real CUDA graphs.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cadenza.engine.backends.torch.cuda_graph import (  # noqa: E402
    NO_GRAPH_ENV, CUDAGraphed, GraphBuckets, SimulatedRuntime, batch_buckets, graphs_enabled)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")


@pytest.mark.parametrize("n, want", [
    pytest.param(1, [1], id="one"),
    pytest.param(6, [1, 2, 4, 6], id="not-pow2"),
    pytest.param(8, [1, 2, 4, 8], id="pow2"),
    pytest.param(256, [1, 2, 4, 8, 16, 32, 64, 128, 256], id="256"),
])
def test_batch_buckets(n, want):
    assert batch_buckets(n) == want


def test_batch_buckets_rejects_zero():
    with pytest.raises(ValueError, match="max_batch"):
        batch_buckets(0)


def test_graphs_enabled_switches(monkeypatch):
    monkeypatch.delenv(NO_GRAPH_ENV, raising=False)
    assert not graphs_enabled("cpu") and not graphs_enabled("cpu", True)
    assert graphs_enabled("cuda") and not graphs_enabled("cuda", False)
    monkeypatch.setenv(NO_GRAPH_ENV, "1")
    assert not graphs_enabled("cuda")
    assert graphs_enabled("cuda", True)  # an explicit request wins over the switch


def test_eager_fallback_runs_fn_every_call():
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2

    g = CUDAGraphed(fn, arg_names=["x"], device="cpu", enabled=graphs_enabled("cpu"))
    for v in range(4):
        assert g(torch.full((3,), float(v))).tolist() == [2.0 * v] * 3
    assert len(calls) == 4 and not g.captured


@pytest.mark.parametrize("bad, what", [
    pytest.param(torch.zeros(2, 4), "shape", id="shape"),
    pytest.param(torch.zeros(2, 3, dtype=torch.int64), "dtype", id="dtype"),
])
@pytest.mark.parametrize("sim", [False, True], ids=["eager", "simulated"])
def test_shape_change_names_the_argument(bad, what, sim):
    g = CUDAGraphed(lambda ctrl: ctrl + 1, name="frame[batch=2]", arg_names=["ctrl"], device="cpu",
                    enabled=sim, runtime=SimulatedRuntime() if sim else None)
    for _ in range(4):
        g(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"frame\[batch=2\]: argument 'ctrl' has shape .* captured for"):
        g(bad)


def test_non_tensor_argument_is_a_type_error():
    g = CUDAGraphed(lambda x, k: x * k, arg_names=["x", "k"], device="cpu", enabled=False)
    with pytest.raises(TypeError, match="argument 'k' must be a tensor"):
        g(torch.ones(1), 3)


def test_simulated_warmup_capture_replay_order():
    rt = SimulatedRuntime()
    g = CUDAGraphed(lambda x: x * 2, name="g", device="cpu", enabled=True, runtime=rt)
    outs = [g(torch.full((2,), float(v))) for v in range(5)]
    assert [kind for kind, _ in rt.log] == ["warmup", "warmup", "capture", "replay", "replay", "replay"]
    # replays return the same static output, overwritten by the next replay (copy to keep)
    assert outs[2] is outs[3] is outs[4]
    assert outs[4].tolist() == [8.0, 8.0]
    assert outs[0].tolist() == [0.0, 0.0] and outs[1].tolist() == [2.0, 2.0]


def test_simulated_replay_reads_the_copied_in_inputs():
    state = torch.zeros(3)

    def fn(x):
        state.add_(x)  # in place on state the graph does not own
        return state * 1

    g = CUDAGraphed(fn, device="cpu", enabled=True, runtime=SimulatedRuntime(), warmup_iters=0)
    g.capture(torch.ones(3))  # the simulation runs fn here (a real capture would not)
    state.zero_()
    for v in (1.0, 2.0, 3.0):
        g(torch.full((3,), v))
    assert state.tolist() == [6.0, 6.0, 6.0]


def test_buckets_capture_largest_first_in_one_pool():
    rt = SimulatedRuntime()
    gb = GraphBuckets(lambda x: x + 1, 6, name="frame", device="cpu", enabled=True, runtime=rt)
    gb.capture_all(lambda n: (torch.zeros(n, 3),))
    captures = [name for kind, name in rt.log if kind == "capture"]
    assert captures == ["frame[batch=6]", "frame[batch=4]", "frame[batch=2]", "frame[batch=1]"]
    assert [kind for kind, _ in rt.log].count("warmup") == 2 * 4
    assert all(g.pool is gb.pool for g in gb.graphs.values()) and gb.pool is not None
    assert [gb.bucket(n) for n in (1, 2, 3, 5, 6)] == [1, 2, 4, 6, 6]
    assert gb(4, torch.ones(4, 3)).tolist() == [[2.0] * 3] * 4
    with pytest.raises(ValueError, match="bucket"):
        gb(3, torch.ones(3, 3))
    with pytest.raises(ValueError, match="largest graph bucket"):
        gb.bucket(7)


# --- on a GPU -------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_replays_in_place_state():
    state = torch.zeros(4, device="cuda")

    def fn(x):
        state.mul_(2).add_(x)
        return state.sum(0, keepdim=True)

    g = CUDAGraphed(fn, arg_names=["x"], device="cuda", enabled=True)
    want = torch.zeros(4)
    for v in range(6):
        x = torch.full((4,), float(v))
        out = g(x.pin_memory())
        want = want * 2 + x
        torch.cuda.synchronize()
        assert torch.equal(state.cpu(), want), v
        assert out.item() == want.sum().item()
    assert g.captured
    with pytest.raises(ValueError, match="argument 'x'"):
        g(torch.zeros(5))


@pytest.mark.gpu
@needs_cuda
def test_cuda_buckets_share_a_pool():
    gb = GraphBuckets(lambda x: (x @ x.t()).sum(1), 8, device="cuda", enabled=True)
    gb.capture_all(lambda n: (torch.randn(n, 16, device="cuda"),))
    assert all(g.captured for g in gb.graphs.values())
    x = torch.randn(3, 16, device="cuda")
    pad = torch.zeros(4, 16, device="cuda")
    pad[:3] = x
    got = gb(gb.bucket(3), pad)[:3]
    torch.testing.assert_close(got, (x @ x.t()).sum(1), atol=1e-4, rtol=1e-4)
