"""The torch backend's generator: the PyTorch reference model over static device state.

`TorchGenerator` implements the runtime's `BatchGenerator` contract
(`runtime/generator.py`), sharing its `RowTable`; it loads `weights/` of a
bundle (or takes a model) and runs the model's own modules over the static
device state of `state.py`.

One frame is one device function (`frame.FrameStep`): sample codebook 0, the
K - 1 depth steps, and the backbone step on the new frame. `frame()` launches it
and reads the frame back; `step()` then only advances the positions, because
the backbone step already ran (the contract allows a backend to do the step's
work inside `frame()`). On CUDA the frame is one CUDA graph per padded batch
bucket (`cuda_graph.GraphBuckets`); on the CPU, or with
`CADENZA_NO_CUDA_GRAPH=1`, it runs eagerly.

Host syncs: `frame()` reads the frame's codes back ([B, K] int64) so the
scheduler can see end of speech: one small device-to-host copy and one wait
per frame, which also keeps the host from running ahead. `launch()` +
`step()` without `collect()` queues frames with no sync, and `read_codes(n)`
then reads the last n frames from the device ring in one copy (benchmarks).

Sampling follows `runtime/sampler.py` step for step with the same counter-based
uniforms (`cadenza.kernels.rng.counter_uniform`), so a seed gives the same codes
here as on the `ort` backend.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from ...contract.bundle import Bundle
from ...errors import BackendUnavailable
from ...runtime.generator import PrefillItem, Row, RowTable
from .cuda_graph import GraphBuckets, batch_buckets, graphs_enabled
from .frame import FrameStep
from .model import check_dtype, load_model
from .state import DeviceState


class TorchGenerator:
    """The generator on PyTorch: static device state, one frame function, CUDA graphs on CUDA.

    Args:
        bundle: a loaded `Bundle` (its `weights/` are read), or None with `model`.
        slots: concurrent rows (KV slots).
        max_len: KV positions per slot.
        device: "cpu" or "cuda" (or a torch.device).
        dtype: weights and KV dtype; default float32 on the CPU, bfloat16 on CUDA.
        use_cuda_graph: None = on CUDA unless `CADENZA_NO_CUDA_GRAPH=1`; False = eager.
        model: a `TTSModel` to use instead of the bundle's weights (its backbone and depth
            decoder are moved to device / dtype in place; the codec is left alone).
        threads: torch intra-op threads on the CPU (process-wide).
        ring: frames kept in the device ring buffer (`read_codes`).
        max_window: longest repetition-penalty window (longer ones are cut to it, with a warning).
        compile_mode: instead of CUDA graphs, run the frame through `torch.compile(mode=...)` (benchmarks).
        pad_batches: pad batches to the bucket sizes (default: whenever graphs or compile are on).
        graph_runtime: `cuda_graph.SimulatedRuntime()` to exercise the graph path on the CPU (tests).
    Example:
        >>> gen = TorchGenerator(Bundle.load("bundles/tiny"), slots=4, max_len=256)
        >>> gen.add(row); gen.prefill([PrefillItem(row, tokens, voice)]); frames = gen.frame(); gen.step()
    """

    def __init__(self, bundle: Bundle | None, slots: int, max_len: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, use_cuda_graph: bool | None = None, *, model=None,
                 threads: int | None = None, ring: int = 64, max_window: int = 64, compile_mode: str | None = None,
                 pad_batches: bool | None = None, graph_runtime=None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device='cuda' but torch.cuda.is_available() is False; use the CPU "
                                     "(backend='torch') or a CUDA build of torch on a machine with a GPU")
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model = (model if model is not None else load_model(bundle)).eval()
        for part in (self.model.backbone, self.model.depth):  # only what generation runs; the codec stays
            if part is not None:
                part.to(self.device, self.dtype).requires_grad_(False)
        check_dtype(self.model, self.dtype, self.device)
        cfg = self.model.cfg
        self.n_codebooks, self.eos = cfg.n_codebooks, cfg.eos_id
        self.max_len = max_len
        self.rows = RowTable(slots, max_len)
        self.state = DeviceState(cfg, slots, max_len, self.device, self.dtype, ring, max_window)
        self.frame_step = FrameStep(self.model, self.state)
        self.graphed = compile_mode is None and (graph_runtime is not None
                                                 or graphs_enabled(self.device, use_cuda_graph))
        self.pad = (self.graphed or compile_mode is not None) if pad_batches is None else pad_batches
        self.buckets = batch_buckets(slots)
        self._compiled = torch.compile(self.frame_step, mode=compile_mode, dynamic=False) if compile_mode else None
        self._init_host_buffers()
        self.frames_launched = self._read_mark = 0
        self.graphs = None
        if self.graphed:
            self._capture(graph_runtime)

    # --- set-up ---------------------------------------------------------------
    def _init_host_buffers(self) -> None:
        cuda = self.device.type == "cuda"
        S = self.rows.slots
        # two control buffers, alternated, so the host never rewrites one a queued copy still reads
        self._ctrl = [torch.zeros(S, 3, dtype=torch.int64, pin_memory=cuda) for _ in range(2)]  # [S, 3]
        self._ctrl_np = [c.numpy() for c in self._ctrl]
        self._ctrl_done = [torch.cuda.Event() for _ in range(2)] if cuda else None
        self._flip = 0
        self._launched = 0  # rows of the last launch
        self._host_out = torch.zeros(S, self.n_codebooks, dtype=torch.int64, pin_memory=cuda)  # [S, K]
        self._out_ready = torch.cuda.Event() if cuda else None

    @torch.no_grad()
    def _capture(self, runtime) -> None:
        """Capture every bucket (largest first, shared pool), then undo the warm-ups' writes."""
        self.graphs = GraphBuckets(self.frame_step, self.rows.slots, name="frame", arg_names=["ctrl"],
                                   device=self.device, enabled=True, runtime=runtime)

        def example(n: int) -> tuple:
            ctrl = torch.zeros(n, 3, dtype=torch.int64)
            ctrl[:, 1:] = 1  # position 0, EOS banned, valid: every slot is free now
            return (ctrl.pin_memory() if self.device.type == "cuda" else ctrl,)

        self.graphs.capture_all(example)
        self.state.clear()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- rows -------------------------------------------------------------------
    def add(self, row: Row) -> None:
        """Give `row` the next slot with its sampling parameters on the device."""
        p = row.sampler.params
        if p.penalises and p.repetition_window > self.state.max_window:
            warnings.warn(f"repetition_window={p.repetition_window} is cut to the torch backend's "
                          f"max_window={self.state.max_window}", stacklevel=2)
        b = self.rows.add(row)
        with torch.no_grad():
            self.state.reset_slot(b, p, row.sampler.draws)

    @torch.no_grad()
    def remove(self, row: Row) -> None:
        """Free `row`'s slot at once: the last row's state moves into it."""
        moved = self.rows.remove(row)
        if moved is not None:  # a framed row's step already ran: its entry at `position` is written too
            self.state.move(moved.src, moved.dst, min(moved.row.position + moved.framed, self.max_len))

    # --- prompts ------------------------------------------------------------------
    def _past(self, b: int, upto: int) -> tuple[list, list]:
        """Slot `b`'s cache as per-layer [1, Hkv, upto, Dh] views."""
        kv = self.state.kv
        return ([kv[l, 0, b:b + 1, :, :upto] for l in range(kv.shape[0])],
                [kv[l, 1, b:b + 1, :, :upto] for l in range(kv.shape[0])])

    @torch.no_grad()
    def prefill(self, items: Sequence[PrefillItem]) -> None:
        """Prefill rows after each row's cached prefix (eagerly, one row at a time)."""
        for it in items:
            self._prefill_one(self.rows.index(it.row), it.row, list(it.tokens), it.voice)

    def _prefill_one(self, b: int, row: Row, tokens: list[int], voice: np.ndarray) -> None:
        start, n = row.position, len(tokens)
        self.rows.check_fits(start, n)
        dev, bb, st = self.device, self.model.backbone, self.state
        tok = torch.as_tensor(np.asarray(tokens, np.int64), device=dev)[None]  # [1, P]
        v = torch.as_tensor(np.ascontiguousarray(voice, np.float32).reshape(1, -1)).to(dev, self.dtype)  # [1, E]
        positions = (start + torch.arange(n, device=dev))[None]  # [1, P]
        pk, pv = self._past(b, start)  # only the valid prefix, as the ORT generator does
        h, nk, nv = bb(bb.embed_prompt(tok, v), positions, pk, pv, torch.full((1,), start, device=dev))
        for l, (k, v_new) in enumerate(zip(nk, nv)):  # [1, Hkv, P, Dh]
            st.kv[l, 0, b, :, start:start + n] = k[0]
            st.kv[l, 1, b, :, start:start + n] = v_new[0]
        last = h[:, -1]  # [1, D]
        st.logits[b] = bb.head(last)[0].float()
        st.hidden[b] = last[0]
        row.position = start + n

    @torch.no_grad()
    def feed_frames(self, row: Row, codes: np.ndarray) -> None:
        """Append frames codes [K, F] to `row` through the backbone step (an acoustic prompt)."""
        dev, bb, kv = self.device, self.model.backbone, self.state.kv
        b = self.rows.index(row)
        frames = torch.as_tensor(np.ascontiguousarray(codes, np.int64), device=dev)  # [K, F]
        for f in range(frames.shape[1]):
            self.rows.check_fits(row.position, 1, "the voice prompt")
            p = torch.full((1,), row.position, device=dev)
            pk, pv = self._past(b, self.max_len)  # the whole slot, masked by its length
            _, nk, nv = bb(bb.embed_codes(frames[None, :, f]), p[:, None], pk, pv, p)
            for l, (k, v) in enumerate(zip(nk, nv)):  # [1, Hkv, 1, Dh]
                kv[l, 0, b, :, row.position] = k[0, :, 0]
                kv[l, 1, b, :, row.position] = v[0, :, 0]
            row.position += 1

    @torch.no_grad()
    def load_prefix(self, row: Row, kv: np.ndarray) -> None:
        """Copy cached prefix entries kv [L, 2, Hkv, n, Dh] into `row`'s slot."""
        n = kv.shape[3]
        self.rows.check_fits(0, n, "the voice prefix")
        self.state.kv[:, :, self.rows.index(row), :, :n] = torch.as_tensor(kv).to(self.device, self.dtype)
        row.position = n

    @torch.no_grad()
    def read_prefix(self, row: Row) -> np.ndarray:
        """A float32 host copy of `row`'s valid entries: [L, 2, Hkv, n, Dh] (caller-owned)."""
        b = self.rows.index(row)
        return self.state.kv[:, :, b, :, :row.position].to("cpu", torch.float32, copy=True).numpy()

    # --- the frame ------------------------------------------------------------------
    def frame(self) -> list[np.ndarray | None]:
        """Sample one frame for every row: [K] codes (caller-owned), or None for end of speech.

        The backbone step on the frame runs here too; `step()` must follow.
        """
        self.launch()
        return self.collect()

    @torch.no_grad()
    def launch(self) -> int:
        """Queue one frame for every row (no host sync); returns the batch. `step()` must follow."""
        B = self.rows.begin_frame()
        self._launched = B
        if not B:
            return 0
        rows = self.rows.rows[:B]
        n = self.padded_batch(B)
        i, self._flip = self._flip, self._flip ^ 1
        if self._ctrl_done is not None:
            self._ctrl_done[i].synchronize()  # the copy that last read this buffer is done
        c = self._ctrl_np[i]
        pos = np.fromiter((r.position for r in rows), np.int64, B)
        c[:B, 0] = pos
        c[:B, 1] = self.rows.eos_ban(B)
        c[:B, 2] = pos < self.max_len  # a full slot writes nothing (step() then raises)
        c[B:n] = (0, 1, 0)  # padding rows: free slots, no K/V writes
        self._run(n, self._ctrl[i][:n])
        if self._ctrl_done is not None:
            self._ctrl_done[i].record()
        self.frames_launched += 1
        return B

    def padded_batch(self, B: int) -> int:
        """The batch a frame of B rows runs at: B, or its bucket when batches are padded."""
        if not self.pad:
            return B
        return next(s for s in self.buckets if s >= B)

    def _run(self, n: int, ctrl: torch.Tensor) -> None:
        if self.graphs is not None:
            self.graphs(n, ctrl)
            return
        dev_ctrl = ctrl.to(self.device, non_blocking=True)
        if self._compiled is not None:
            torch.compiler.cudagraph_mark_step_begin()  # reduce-overhead: a new step, earlier outputs are dead
            self._compiled(dev_ctrl)
        else:
            self.frame_step(dev_ctrl)

    @torch.no_grad()
    def collect(self) -> list[np.ndarray | None]:
        """Read the launched frame back (one device-to-host copy and wait) and count it per row."""
        B = self._launched
        if not B:
            return []
        if self._out_ready is not None:
            self._host_out[:B].copy_(self.state.out[:B], non_blocking=True)
            self._out_ready.record()
            self._out_ready.synchronize()
            arr = self._host_out[:B].numpy()
        else:
            arr = self.state.out[:B].numpy()
        return self.rows.finish_frame([None if codes[0] == self.eos else codes.copy() for codes in arr])

    def step(self) -> None:
        """Advance the positions of the framed rows (their K/V is already written by the frame)."""
        self.rows.step_batch()
        self.rows.end_step()

    # --- batched code reads -------------------------------------------------------
    @property
    def frames_ready(self) -> int:
        """Frames launched since the last `read_codes` (at most the ring's length)."""
        return min(self.frames_launched - self._read_mark, self.state.ring_len)

    @torch.no_grad()
    def read_codes(self, n: int | None = None) -> np.ndarray:
        """The last `n` frames (default: `frames_ready`) from the device ring, oldest first.

        Returns:
            int64 [n, slots, K], caller-owned; column b is the row in slot b when
            that frame ran (rows move on `remove`); codebook 0 may be the EOS id.
            One device-to-host copy (a sync).
        """
        avail = min(self.frames_launched, self.state.ring_len)
        n = self.frames_ready if n is None else n
        if not 0 <= n <= avail:
            raise ValueError(f"read_codes: n={n} but the ring holds {avail} frames (ring={self.state.ring_len})")
        idx = [(self.frames_launched - n + j) % self.state.ring_len for j in range(n)]
        self._read_mark = self.frames_launched
        return self.state.ring[torch.tensor(idx, device=self.device)].cpu().numpy()

    def close(self) -> None:
        """Drop the graphs; the device buffers go with the generator."""
        if self.graphs is not None:
            self.graphs.reset()
            self.graphs = None

    def __enter__(self) -> TorchGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
