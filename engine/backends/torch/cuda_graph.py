"""One CUDA-graph wrapper: warm up, capture on static buffers, copy inputs in, replay.

`CUDAGraphed(fn)` follows moshi's `utils/compile.py` `CUDAGraphed`: the first
`warmup_iters` calls run `fn` eagerly (so Triton compilation and autotuning
launches are never captured), the next call captures `fn` on static copies of
its inputs, and every later call copies its inputs into those buffers and
replays. `GraphBuckets` follows vLLM's `cudagraph_utils.py`: one graph per
padded batch size (1, 2, 4, ... up to the maximum), all in one shared memory
pool, captured largest first so the smaller graphs fit in the pool the largest
one already reserved.

A shape or dtype that differs from the captured one is a `ValueError` naming
the argument (a graph replays fixed shapes). With `CADENZA_NO_CUDA_GRAPH=1`,
on the CPU, or with `enabled=False` the wrapper calls `fn` eagerly, but it
still checks shapes, so code that runs on the CPU is held to the same contract.

Ownership: what a replay returns are the graph's static output tensors; they
are overwritten by the next replay of the same graph, so copy (`.clone()`) what
must outlive it. Eager calls return what `fn` returns.

The CUDA calls sit in `CudaRuntime`; `SimulatedRuntime` stands in for it in
CPU tests (a replay re-runs `fn` on the static inputs and copies the results
into the captured outputs), which exercises the static-buffer discipline
without a GPU.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

NO_GRAPH_ENV = "CADENZA_NO_CUDA_GRAPH"


def graphs_enabled(device: torch.device | str, requested: bool | None = None) -> bool:
    """Whether to capture CUDA graphs on `device`.

    Args:
        device: where the work runs; graphs need a CUDA device.
        requested: True / False forces the choice (True still needs CUDA); None
            means "on CUDA unless `CADENZA_NO_CUDA_GRAPH=1`".
    Returns:
        True when graphs should be captured.
    """
    if torch.device(device).type != "cuda" or requested is False:
        return False
    return requested is True or os.environ.get(NO_GRAPH_ENV, "0") in ("", "0")


def batch_buckets(max_batch: int) -> list[int]:
    """Padded batch sizes 1, 2, 4, ... below `max_batch`, then `max_batch` itself (ascending)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes, n = [], 1
    while n < max_batch:
        sizes.append(n)
        n *= 2
    return sizes + [max_batch]


@dataclass(frozen=True)
class _Sig:
    shape: tuple
    dtype: torch.dtype


class CudaRuntime:
    """The CUDA calls of a capture, in one place (torch's documented graph API)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._side = None

    def pool(self):
        return torch.cuda.graph_pool_handle()

    def warmup(self, fn: Callable, args: tuple):
        """Run `fn` on a side stream (as torch's docs ask before a capture), ordered with the current stream."""
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        cur = torch.cuda.current_stream(self.device)
        self._side.wait_stream(cur)
        with torch.cuda.stream(self._side):
            out = fn(*args)
        cur.wait_stream(self._side)
        return out

    def capture(self, fn: Callable, args: tuple, pool):
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA work (a codec worker, a second engine) does not void the capture
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            out = fn(*args)
        return graph, out

    def replay(self, graph) -> None:
        graph.replay()


class _SimGraph:
    def __init__(self, fn, args, out):
        self.fn, self.args, self.out = fn, args, out


class SimulatedRuntime:
    """A CPU stand-in for `CudaRuntime` (tests): it records the order of warm-ups and captures.

    A replay re-runs the captured function on the *static* inputs and copies its
    results into the *captured* outputs, so a caller that forgets to copy an
    input in, or reads an output it does not own, gets the wrong numbers here
    as it would on a GPU. (It cannot catch host values baked into a graph.)
    """

    def __init__(self):
        self.log: list[tuple[str, str]] = []
        self.name = ""

    def pool(self):
        return object()

    def warmup(self, fn, args):
        self.log.append(("warmup", self.name))
        return fn(*args)

    def capture(self, fn, args, pool):
        self.log.append(("capture", self.name))
        out = fn(*args)
        return _SimGraph(fn, args, out), out

    def replay(self, graph: _SimGraph) -> None:
        self.log.append(("replay", self.name))
        _copy_into(graph.out, graph.fn(*graph.args))


def _copy_into(dst, src) -> None:
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, (tuple, list)):
        for d, s in zip(dst, src):
            _copy_into(d, s)


class CUDAGraphed:
    """Run `fn(*tensors)` through one CUDA graph (or eagerly where graphs are off).

    Args:
        fn: the function to capture; it must take tensors only, not sync with
            the host, and allocate nothing it must keep (write state in place).
        name: used in error messages ("backbone_step[batch=8]").
        arg_names: names of `fn`'s arguments, for error messages.
        device: where the static inputs live; inputs are copied there.
        enabled: capture graphs (needs CUDA); False runs eagerly.
        warmup_iters: eager calls before the capture (2: the first may compile
            or autotune, the second runs what the capture will see).
        pool: a memory pool shared with other graphs (`torch.cuda.graph_pool_handle()`).
        runtime: `CudaRuntime` (default) or `SimulatedRuntime` (tests).
    Example:
        >>> step = CUDAGraphed(lambda x: x * 2, arg_names=["x"], device="cpu", enabled=False)
        >>> step(torch.ones(2)).tolist()
        [2.0, 2.0]
    """

    def __init__(self, fn: Callable, *, name: str = "graph", arg_names: Sequence[str] = (),
                 device: torch.device | str = "cuda", enabled: bool = True, warmup_iters: int = 2,
                 pool=None, runtime=None):
        self.fn, self.name, self.arg_names = fn, name, list(arg_names)
        self.device = torch.device(device)
        self.enabled, self.warmup_iters = enabled, warmup_iters
        self.runtime = runtime if runtime is not None else (CudaRuntime(self.device) if enabled else None)
        self.pool = pool
        self.sig: list[_Sig] | None = None
        self.graph = None
        self.static_in: list[torch.Tensor] = []
        self.static_out = None
        self.calls = 0

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *args: torch.Tensor):
        """Eager warm-up calls, then a capture, then replays; returns fn's outputs (see ownership above)."""
        self._check(args)
        if not self.enabled:
            return self.fn(*[a.to(self.device, non_blocking=True) for a in args])
        if self.graph is None:
            if self.calls < self.warmup_iters:
                self.calls += 1
                return self._runtime().warmup(self.fn, tuple(a.to(self.device, non_blocking=True) for a in args))
            self._capture(args)
        for dst, src in zip(self.static_in, args):
            dst.copy_(src, non_blocking=True)
        self._runtime().replay(self.graph)
        return self.static_out

    def capture(self, *example_args: torch.Tensor) -> None:
        """Warm up and capture now (vLLM style), without replaying.

        The warm-up calls run `fn` for real on `example_args`: undo their side
        effects on any state `fn` writes before using it.
        """
        self._check(example_args)
        if not self.enabled or self.graph is not None:
            return
        dev_args = tuple(a.to(self.device) for a in example_args)
        while self.calls < self.warmup_iters:
            self.calls += 1
            self._runtime().warmup(self.fn, dev_args)
        self._capture(example_args)

    def reset(self) -> None:
        """Drop the graph and its static buffers (the next calls warm up and capture again)."""
        self.graph, self.static_in, self.static_out, self.sig, self.calls = None, [], None, None, 0

    def _runtime(self):
        if isinstance(self.runtime, SimulatedRuntime):
            self.runtime.name = self.name
        return self.runtime

    def _capture(self, args: tuple) -> None:
        self.static_in = [torch.empty(a.shape, dtype=a.dtype, device=self.device) for a in args]
        for dst, src in zip(self.static_in, args):
            dst.copy_(src)
        self.graph, self.static_out = self._runtime().capture(self.fn, tuple(self.static_in), self.pool)

    def _arg_name(self, i: int) -> str:
        return self.arg_names[i] if i < len(self.arg_names) else f"#{i}"

    def _check(self, args: tuple) -> None:
        for i, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"{self.name}: argument {self._arg_name(i)!r} must be a tensor, got "
                                f"{type(a).__name__}; pass Python values as tensors or bake them into the function")
        sig = [_Sig(tuple(a.shape), a.dtype) for a in args]
        if self.sig is None:
            self.sig = sig
            return
        if len(sig) != len(self.sig):
            raise ValueError(f"{self.name}: called with {len(sig)} arguments, captured with {len(self.sig)}")
        for i, (got, want) in enumerate(zip(sig, self.sig)):
            if got != want:
                raise ValueError(
                    f"{self.name}: argument {self._arg_name(i)!r} has shape {got.shape} and dtype {got.dtype}, "
                    f"but the graph was captured for shape {want.shape} and dtype {want.dtype}; a CUDA graph "
                    "replays fixed shapes: pad the input to the captured shape (GraphBuckets.bucket) or build "
                    "another CUDAGraphed for the new shape")


class GraphBuckets:
    """One `CUDAGraphed` per padded batch size, sharing one memory pool.

    Args:
        fn: the function each graph captures; the batch size is the leading dim
            of its first argument.
        max_batch: the largest batch; sizes are `batch_buckets(max_batch)`.
        Other args: as `CUDAGraphed`.
    Example:
        >>> g = GraphBuckets(lambda x: x + 1, 6, device="cpu", enabled=False)
        >>> g.sizes, g.bucket(3)
        ([1, 2, 4, 6], 4)
    """

    def __init__(self, fn: Callable, max_batch: int, *, name: str = "graph", arg_names: Sequence[str] = (),
                 device: torch.device | str = "cuda", enabled: bool = True, warmup_iters: int = 2, runtime=None):
        self.sizes = batch_buckets(max_batch)
        self.enabled = enabled
        rt = runtime if runtime is not None else (CudaRuntime(device) if enabled else None)
        self.pool = rt.pool() if enabled else None
        self.graphs = {n: CUDAGraphed(fn, name=f"{name}[batch={n}]", arg_names=arg_names, device=device,
                                      enabled=enabled, warmup_iters=warmup_iters, pool=self.pool, runtime=rt)
                       for n in self.sizes}

    def bucket(self, n: int) -> int:
        """The smallest captured batch size >= n."""
        for size in self.sizes:
            if size >= n:
                return size
        raise ValueError(f"batch {n} exceeds the largest graph bucket {self.sizes[-1]}; raise max_batch")

    def capture_all(self, example_args: Callable[[int], tuple]) -> None:
        """Capture every bucket now, largest first (so the shared pool is sized by the largest).

        Args:
            example_args: batch size -> the arguments to warm up and capture with.
        """
        for n in sorted(self.sizes, reverse=True):
            self.graphs[n].capture(*example_args(n))

    def __call__(self, n: int, *args: torch.Tensor):
        """Run the graph of bucket `n` (a size from `sizes`; pad the inputs to it)."""
        if n not in self.graphs:
            raise ValueError(f"no graph for batch {n}; use bucket({n}) = {self.bucket(n)} and pad the inputs")
        return self.graphs[n](*args)

    def reset(self) -> None:
        for g in self.graphs.values():
            g.reset()
