"""The `torch` backend: the PyTorch reference model run as a static-buffer, CUDA-graph generator.

`TorchGenerator` is a drop-in for `cadenza.engine.generator.Generator` as the
`Scheduler` drives it (`slots`, `K`, `rows`, `batch`, `add`, `remove`,
`prefill`, `load_prefix`, `read_prefix`, `feed_frames`, `frame`, `step`,
`close`). It loads `weights/` of a bundle (or takes a model) and runs the
model's own modules over the static device state of `torch_state.py`.

One frame is one device function (`torch_frame.FrameStep`): sample codebook 0,
the K - 1 depth steps, and the backbone step on the new frame. `frame()`
launches it and reads the frame back; `step()` is then host bookkeeping only
(positions advance), because the backbone step already ran. On CUDA the frame
is one CUDA graph per padded batch bucket (`cuda_graph.GraphBuckets`); on the
CPU, or with `CADENZA_NO_CUDA_GRAPH=1`, it runs eagerly.

Host syncs: `frame()` reads the frame's codes back ([B, K] int64) so the
scheduler can see end-of-speech: one small device-to-host copy and one wait
per frame, which also keeps the host from running ahead. `launch()` +
`step()` without `collect()` queues frames with no sync, and `read_codes(n)`
then reads the last n frames from the device ring in one copy (benchmarks, or a
scheduler that decides end-of-speech once per chunk).

Sampling: greedy decoding gives the same codes as the ORT `Generator` and as
`cadenza.export.reference.generate`. Seeded sampling is deterministic per
stream (uniforms `philox_uniform(seed, draw)`, a counter per row, so batch
neighbours never change a stream's draws), but its draws differ from the
numpy sampler's: a stream sampled here does not replay on the ORT backend.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .bundle import Bundle
from .cuda_graph import GraphBuckets, batch_buckets, graphs_enabled
from .errors import BackendUnavailable, KVCacheExhausted
from .generator import Row
from .torch_frame import FrameStep
from .torch_model import check_dtype, load_model
from .torch_state import DeviceState


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
        >>> b = gen.add(row); gen.prefill(b, tokens, voice); frames = gen.frame(); gen.step()
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
        self.K, self.C, self.eos = cfg.n_codebooks, cfg.codebook_size, cfg.eos_id
        self.slots, self.max_len = slots, max_len
        self.rows: list[Row] = []
        self.state = DeviceState(cfg, slots, max_len, self.device, self.dtype, ring, max_window)
        self.frame_step = FrameStep(self.model, self.state)
        self.graphed = compile_mode is None and (graph_runtime is not None
                                                 or graphs_enabled(self.device, use_cuda_graph))
        self.pad = (self.graphed or compile_mode is not None) if pad_batches is None else pad_batches
        self.buckets = batch_buckets(slots)
        self._compiled = torch.compile(self.frame_step, mode=compile_mode, dynamic=False) if compile_mode else None
        self._init_host_buffers()
        self._pending: list[Row] | None = None  # rows the last launch stepped, until step()
        self._pending_ids: set[int] = set()
        self.frames_launched = self._read_mark = 0
        self.graphs = None
        if self.graphed:
            self._capture(graph_runtime)

    # --- set-up ---------------------------------------------------------------
    def _init_host_buffers(self) -> None:
        cuda = self.device.type == "cuda"
        S = self.slots
        # two control buffers, alternated, so the host never rewrites one a queued copy still reads
        self._ctrl = [torch.zeros(S, 3, dtype=torch.int64, pin_memory=cuda) for _ in range(2)]  # [S, 3]
        self._ctrl_np = [c.numpy() for c in self._ctrl]
        self._ctrl_done = [torch.cuda.Event() for _ in range(2)] if cuda else None
        self._flip = 0
        self._host_out = torch.zeros(S, self.K, dtype=torch.int64, pin_memory=cuda)  # [S, K]
        self._out_ready = torch.cuda.Event() if cuda else None

    @torch.no_grad()
    def _capture(self, runtime) -> None:
        """Capture every bucket (largest first, shared pool), then undo the warm-ups' writes."""
        self.graphs = GraphBuckets(self.frame_step, self.slots, name="frame", arg_names=["ctrl"],
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
    @property
    def batch(self) -> int:
        return len(self.rows)

    def add(self, row: Row) -> int:
        """Give `row` the next slot (the caller checked one is free); returns its index."""
        assert len(self.rows) < self.slots, "no free slot"
        p = row.sampler.params
        if p.repetition_penalty > 1 and p.repetition_window > self.state.max_window:
            warnings.warn(f"repetition_window={p.repetition_window} is cut to the torch backend's "
                          f"max_window={self.state.max_window}", stacklevel=2)
        b = len(self.rows)
        with torch.no_grad():
            self.state.reset_slot(b, p)
        self.rows.append(row)
        return b

    @torch.no_grad()
    def remove(self, b: int) -> None:
        """Free row `b` at once: the last row moves into its slot, keeping rows compact."""
        last = len(self.rows) - 1
        if b != last:
            moved = self.rows[last]
            ahead = self._pending is not None and id(moved) in self._pending_ids  # its step already ran
            self.state.move(last, b, min(moved.position + ahead, self.max_len))
            self.rows[b] = moved
        self.rows.pop()
        if not self.rows and self._pending is not None:
            # every framed row left: nothing to step (streams admitted before step() have no frame yet)
            self._pending, self._pending_ids = [], set()

    # --- prompts ------------------------------------------------------------------
    def _check_fits(self, start: int, n: int, what: str) -> None:
        if start + n > self.max_len:
            raise KVCacheExhausted(
                f"{what} needs {start + n} cache positions but a slot holds {self.max_len}; "
                f"raise max_len (Engine.load(..., max_len=...)) or shorten the text")

    def _past(self, b: int, upto: int) -> tuple[list, list]:
        """Row `b`'s cache as per-layer [1, Hkv, upto, Dh] views."""
        kv = self.state.kv
        return ([kv[l, 0, b:b + 1, :, :upto] for l in range(kv.shape[0])],
                [kv[l, 1, b:b + 1, :, :upto] for l in range(kv.shape[0])])

    @torch.no_grad()
    def index(self, row: Row) -> int:
        """The current row index of `row` (rows move when others leave)."""
        return next(i for i, r in enumerate(self.rows) if r is row)

    def prefill_many(self, items: list[tuple[int, list[int], np.ndarray]]) -> None:
        """Prefill rows (row, tokens, voice) after each row's cached prefix (eager, one row at a time)."""
        for b, tokens, voice in items:
            self.prefill(b, tokens, voice, start=self.rows[b].position)

    def prefill(self, b: int, tokens: list[int], voice: np.ndarray, start: int = 0) -> None:
        """Prefill row `b` with `tokens` after `start` cached positions (0: a fresh prompt)."""
        n = len(tokens)
        self._check_fits(start, n, "prompt")
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
        self.rows[b].position = start + n

    @torch.no_grad()
    def feed_frames(self, b: int, codes: np.ndarray) -> None:
        """Append frames codes [K, F] to row `b` through the backbone step (an acoustic prompt)."""
        dev, bb, kv = self.device, self.model.backbone, self.state.kv
        frames = torch.as_tensor(np.ascontiguousarray(codes, np.int64), device=dev)  # [K, F]
        row = self.rows[b]
        for f in range(frames.shape[1]):
            self._check_fits(row.position, 1, "the voice prompt")
            p = torch.full((1,), row.position, device=dev)
            pk, pv = self._past(b, self.max_len)  # the whole slot, masked by its length
            _, nk, nv = bb(bb.embed_codes(frames[None, :, f]), p[:, None], pk, pv, p)
            for l, (k, v) in enumerate(zip(nk, nv)):  # [1, Hkv, 1, Dh]
                kv[l, 0, b, :, row.position] = k[0, :, 0]
                kv[l, 1, b, :, row.position] = v[0, :, 0]
            row.position += 1

    @torch.no_grad()
    def load_prefix(self, b: int, kv: np.ndarray) -> None:
        """Copy cached prefix entries kv [L, 2, Hkv, n, Dh] into row `b`'s slot."""
        n = kv.shape[3]
        self._check_fits(0, n, "the voice prefix")
        self.state.kv[:, :, b, :, :n] = torch.as_tensor(kv).to(self.device, self.dtype)
        self.rows[b].position = n

    @torch.no_grad()
    def read_prefix(self, b: int) -> np.ndarray:
        """A float32 host copy of row `b`'s valid entries: [L, 2, Hkv, n, Dh] (caller-owned)."""
        n = self.rows[b].position
        return self.state.kv[:, :, b, :, :n].to("cpu", torch.float32, copy=True).numpy()

    # --- the frame ------------------------------------------------------------------
    def frame(self) -> list[np.ndarray | None]:
        """Sample one frame for every row: [K] codes (caller-owned), or None where the row chose end-of-speech.

        The backbone step on the frame runs here too; call `step()` next.
        """
        self.launch()
        return self.collect()

    @torch.no_grad()
    def launch(self) -> int:
        """Queue one frame for every row (no host sync); returns the batch. `step()` must follow."""
        if self._pending:
            raise RuntimeError("frame()/launch() called again before step(); call step() after every frame")
        B = self.batch
        if not B:
            self._pending, self._pending_ids = [], set()
            return 0
        n = self.padded_batch(B)
        i, self._flip = self._flip, self._flip ^ 1
        if self._ctrl_done is not None:
            self._ctrl_done[i].synchronize()  # the copy that last read this buffer is done
        c = self._ctrl_np[i]
        pos = np.fromiter((r.position for r in self.rows), np.int64, B)
        c[:B, 0] = pos
        c[:B, 1] = [r.forced or r.frames < r.min_frames for r in self.rows]
        c[:B, 2] = pos < self.max_len  # a full slot writes nothing (step() then raises)
        c[B:n] = (0, 1, 0)  # padding rows: free slots, no K/V writes
        self._run(n, self._ctrl[i][:n])
        if self._ctrl_done is not None:
            self._ctrl_done[i].record()
        self._pending, self._pending_ids = list(self.rows), {id(r) for r in self.rows}
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
        rows = self._pending or []
        B = len(rows)
        if not B:
            return []
        if self._out_ready is not None:
            self._host_out[:B].copy_(self.state.out[:B], non_blocking=True)
            self._out_ready.record()
            self._out_ready.synchronize()
            arr = self._host_out[:B].numpy()
        else:
            arr = self.state.out[:B].numpy()
        frames: list[np.ndarray | None] = []
        for row, codes in zip(rows, arr):
            if codes[0] == self.eos:
                frames.append(None)
                continue
            row.frames += 1
            frames.append(codes.copy())
        return frames

    def step(self) -> None:
        """Advance the positions of the rows the last frame stepped (their K/V is already written)."""
        if self._pending is None:
            if not self.rows:
                return
            raise RuntimeError("step() without a frame(): the torch backend runs the backbone step in frame()")
        stepped = [r for r in self.rows if id(r) in self._pending_ids]
        self._pending, self._pending_ids = None, set()
        if stepped:
            self._check_fits(max(r.position for r in stepped), 1, "the stream")
        for r in stepped:
            r.position += 1

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
        self.rows.clear()
        self._pending = None

    def __enter__(self) -> TorchGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
