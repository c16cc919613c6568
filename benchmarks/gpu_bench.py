"""The GPU benchmark: torch eager vs torch.compile(reduce-overhead) vs Cadenza's CUDA-graph generator.

The `1b` size (Llama-3.2-1B backbone shape, K = 32 codebooks) with random
weights built on the device (no ONNX export), bf16. Per batch bucket it
measures the frame time (`frame()` + `step()`, host included: one frame = one
backbone step + 31 depth steps + sampling), its p50 / p99, the pipelined
device time (frames queued with no per-frame sync), real-time streams, and
the bandwidth achieved against the HBM floor (weight bytes / frame time); then
time-to-first-audio (prefill + first frame + codec decode of the first chunk,
PCM on the host) and the codec decoder's throughput.

Every row goes to `gpu_bench.jsonl` as soon as it is measured (a part killed
by its time budget keeps what it measured) and all rows to `gpu_bench.json`,
in `--out` or `$OUT`.

    python benchmarks/gpu_bench.py --parts graph,eager,ttfa,codec      # on a GPU
    python benchmarks/gpu_bench.py --parts compile --compile-buckets 1,8
    python benchmarks/gpu_bench.py --dry-run --size tiny --device cpu  # the same code on the CPU, seconds

In a dry run on the CPU the "graph" part runs the graph path through
`SimulatedRuntime` (capture, padded buckets, replays), so its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cadenza.engine.contract import text as tok
from cadenza.engine.backends.torch.cuda_graph import SimulatedRuntime, batch_buckets
from cadenza.engine.errors import BackendUnavailable
from cadenza.engine.runtime.generator import PrefillItem, Row
from cadenza.engine.runtime.metrics import percentile
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler
from cadenza.engine.backends.torch.generator import TorchGenerator
from cadenza.engine.backends.torch.model import check_dtype
from cadenza.engine.backends.torch.codec import TorchCodecDecoder

HBM_TBS = 3.35  # H100 SXM HBM3, the floor in ANCHORS.md
TEXT = "Hello there. This is a streaming test of the engine, one sentence long."
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Recorder:
    """Rows to stdout, `gpu_bench.jsonl` (appended at once) and `gpu_bench.json` (at the end)."""

    def __init__(self, out: str | None, meta: dict):
        self.dir = Path(out) if out else None
        self.meta, self.rows = meta, []
        if self.dir:
            self.dir.mkdir(parents=True, exist_ok=True)

    def log(self, msg: str) -> None:
        print(msg, flush=True)

    def add(self, row: dict) -> None:
        row = {"device": self.meta["device"], **row}
        self.rows.append(row)
        brief = {k: v for k, v in row.items() if k != "samples_ms"}
        self.log(json.dumps(brief))
        if self.dir:
            with open(self.dir / "gpu_bench.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def finish(self) -> None:
        if self.dir:
            (self.dir / "gpu_bench.json").write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1))


def build_model(size: str, device: torch.device, dtype: torch.dtype):
    """Random seeded weights initialised directly on the device (fast for 1b), then cast."""
    from cadenza.export.model.config import TTSConfig
    from cadenza.export.model.model import TTSModel

    with torch.device(device):
        model = TTSModel.from_config(TTSConfig.from_name(size))
    return model.to(dtype).eval().requires_grad_(False)


def frame_bytes(model, dtype: torch.dtype, batch: int, max_len: int) -> tuple[int, int]:
    """(weight bytes, KV bytes) one frame reads: the backbone once, the depth transformer K - 1 times."""
    es = torch.empty(0, dtype=dtype).element_size()
    cfg, bb = model.cfg, model.backbone
    w = sum(p.numel() for p in bb.transformer.parameters()) + bb.head.weight.numel()
    if model.depth is not None:
        d = model.depth
        per_step = sum(p.numel() for p in d.transformer.parameters()) + cfg.depth.dim * cfg.codebook_size
        w += (cfg.n_codebooks - 1) * per_step + d.in_proj.weight.numel()
    b = cfg.backbone
    kv = batch * b.n_layers * 2 * b.n_kv_heads * max_len * b.head_dim  # the masked attention reads all of T
    return w * es, kv * es


def make_row(i: int, K: int) -> Row:
    """A sampled stream with end-of-speech banned, so it runs as long as the benchmark needs."""
    return Row(StreamSampler(SamplingParams(temperature=0.9, top_k=50, seed=i), K), forced=True,
               min_frames=0, max_frames=1 << 30)


def add_row(gen: TorchGenerator, i: int, prompt: list[int], voice: np.ndarray) -> Row:
    """A new row, prefilled with the prompt."""
    row = make_row(i, gen.n_codebooks)
    gen.add(row)
    gen.prefill([PrefillItem(row, prompt, voice)])
    return row


def fill(gen: TorchGenerator, n: int, prompt: list[int], voice: np.ndarray) -> None:
    """Grow the batch to n rows, every row at the prompt's end (old rows rewound: fresh streams)."""
    while len(gen.rows) < n:
        add_row(gen, len(gen.rows), prompt, voice)
    for r in gen.rows:
        r.position = len(prompt)  # the K/V beyond it is masked, so this is a fresh stream's state


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_frames(gen: TorchGenerator, iters: int, warmup: int) -> tuple[list[float], float]:
    """Host-inclusive frame times (ms), then the pipelined device time per frame (ms)."""
    for _ in range(warmup):
        gen.frame()
        gen.step()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        gen.frame()
        gen.step()
        samples.append((time.perf_counter() - t0) * 1e3)
    sync(gen.device)
    t0 = time.perf_counter()
    for _ in range(iters):
        gen.launch()
        gen.step()
    sync(gen.device)
    return samples, (time.perf_counter() - t0) * 1e3 / iters


def frame_row(impl: str, gen: TorchGenerator, n: int, samples: list[float], piped: float, a) -> dict:
    wb, kvb = frame_bytes(gen.model, gen.dtype, gen.padded_batch(n), a.max_len)
    p50 = percentile(samples, 50)
    period_ms = 1e3 * gen.model.cfg.codec.hop / gen.model.cfg.codec.sample_rate
    return {
        "part": "frame", "impl": impl, "batch": n, "bucket": gen.padded_batch(n), "size": a.size, "dtype": a.dtype,
        "max_len": a.max_len, "iters": len(samples), "p50_ms": p50, "p99_ms": percentile(samples, 99),
        "min_ms": min(samples), "max_ms": max(samples), "pipelined_ms": piped,
        "x_realtime_per_stream": period_ms / p50, "realtime_streams": n * min(1.0, period_ms / p50),
        "weight_gb": wb / 1e9, "kv_gb": kvb / 1e9, "weight_floor_ms": wb / (HBM_TBS * 1e12) * 1e3,
        "weight_tb_s": wb / (p50 * 1e-3) / 1e12, "total_tb_s": (wb + kvb) / (p50 * 1e-3) / 1e12,
        "floor_fraction": wb / (HBM_TBS * 1e12) / (p50 * 1e-3), "samples_ms": samples,
    }


def part_frames(impl: str, model, a, rec: Recorder, prompt, voice) -> None:
    """Frame timings per bucket for one implementation (graph / eager / compile)."""
    dev = torch.device(a.device)
    kw = {"graph": {"use_cuda_graph": True}, "eager": {"use_cuda_graph": False},
          "compile": {"use_cuda_graph": False, "compile_mode": "reduce-overhead"}}[impl]
    if impl == "graph" and dev.type != "cuda":
        kw = {"graph_runtime": SimulatedRuntime()}
    buckets = a.compile_buckets if impl == "compile" else a.buckets
    t0 = time.perf_counter()
    gen = TorchGenerator(None, max(buckets), a.max_len, device=dev, dtype=model_dtype(model), model=model,
                         pad_batches=impl != "eager", **kw)
    rec.add({"part": "setup", "impl": impl, "slots": max(buckets), "seconds": time.perf_counter() - t0,
             "what": "construction (graphs: warm-up + capture of every bucket, largest first)"})
    deadline = time.perf_counter() + a.part_budget
    for n in buckets:
        if time.perf_counter() > deadline:
            rec.add({"part": "frame", "impl": impl, "batch": n, "skipped": f"part budget {a.part_budget} s spent"})
            continue
        fill(gen, n, prompt, voice)
        t1 = time.perf_counter()
        warm = a.warmup if impl != "compile" else 1
        if impl == "compile":
            gen.frame()
            gen.step()
            rec.add({"part": "compile", "impl": impl, "batch": n, "first_frame_s": time.perf_counter() - t1,
                     **dynamo_counts()})
        iters = a.iters if impl != "eager" else max(3, a.iters // 3)
        samples, piped = time_frames(gen, iters, warm)
        rec.add(frame_row(impl, gen, n, samples, piped, a))
    gen.close()
    del gen
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def dynamo_counts() -> dict:
    """Graphs compiled and graph breaks so far (a break or a recompile per frame explains a slow compile row)."""
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values())}


def model_dtype(model) -> torch.dtype:
    return next(model.backbone.parameters()).dtype


def part_ttfa(model, a, rec: Recorder, prompt, voice) -> None:
    """Prefill + first frame + first chunk (1 frame) decoded to host PCM, alone and beside busy streams."""
    dev = torch.device(a.device)
    kw = {"graph_runtime": SimulatedRuntime()} if dev.type != "cuda" else {}
    slots = max(a.ttfa_background) + 1
    gen = TorchGenerator(None, slots, a.max_len, device=dev, dtype=model_dtype(model), model=model, **kw)
    dec = TorchCodecDecoder(model.codec, dev, max_batch=1, max_frames=8)
    for bg in a.ttfa_background:
        fill(gen, bg, prompt, voice)
        samples = []
        for rep in range(a.ttfa_reps + 1):
            sync(dev)
            t0 = time.perf_counter()
            row = add_row(gen, 10_000 + rep, prompt, voice)
            frame = gen.frame()[gen.rows.index(row)]
            gen.step()
            pcm = dec.result(dec.submit(frame[None, :, None], dec.zero_states(1)))
            ms = (time.perf_counter() - t0) * 1e3
            assert pcm.shape[1] == model.cfg.codec.hop
            gen.remove(row)
            if rep:  # the first is a warm-up
                samples.append(ms)
        rec.add({"part": "ttfa", "impl": "graph", "background_streams": bg, "prompt_tokens": len(prompt),
                 "p50_ms": percentile(samples, 50), "max_ms": max(samples), "samples_ms": samples,
                 "what": "add + prefill + first frame + 1-frame chunk decoded, PCM on host (model side)"})
    gen.close()


def part_codec(model, a, rec: Recorder) -> None:
    """Chunks of 8 frames for G streams, double-buffered: submit N + 1, then read N."""
    dev = torch.device(a.device)
    cfg = model.cfg
    F = 8
    for G in a.codec_batches:
        dec = TorchCodecDecoder(model.codec, dev, max_batch=G, max_frames=F)
        codes = torch.randint(0, cfg.codebook_size, (G, cfg.n_codebooks, F))
        states = dec.zero_states(G)
        prev = dec.submit(codes, states)
        for _ in range(2):
            dec.result(prev)
            prev = dec.submit(codes, states)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(a.iters):
            nxt = dec.submit(codes, states)
            dec.result(prev)
            prev = nxt
        dec.result(prev)
        ms = (time.perf_counter() - t0) * 1e3 / a.iters
        audio_s = G * F * cfg.codec.hop / cfg.codec.sample_rate
        rec.add({"part": "codec", "impl": "torch-stream", "streams": G, "frames_per_chunk": F, "ms_per_chunk": ms,
                 "us_per_stream_frame": ms * 1e3 / (G * F), "x_realtime": audio_s / (ms * 1e-3)})
        del dec, states


def meta(a) -> dict:
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.machine()})"
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "commit": os.environ.get("CADENZA_COMMIT") or os.environ.get("GITHUB_SHA"), "argv": sys.argv[1:],
            "hbm_floor_tb_s": HBM_TBS, "size": a.size, "dtype": a.dtype, "max_len": a.max_len,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cuda_graph_env": os.environ.get("CADENZA_NO_CUDA_GRAPH"), "triton_env": os.environ.get("CADENZA_NO_TRITON")}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--size", default="1b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--parts", default="graph,eager,ttfa,codec", help="graph,eager,compile,ttfa,codec")
    p.add_argument("--buckets", type=ints, default=batch_buckets(256))
    p.add_argument("--compile-buckets", type=ints, default=[1, 8])
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--part-budget", type=float, default=120.0, help="seconds per part before buckets are skipped")
    p.add_argument("--ttfa-background", type=ints, default=[0, 63])
    p.add_argument("--ttfa-reps", type=int, default=5)
    p.add_argument("--codec-batches", type=ints, default=[1, 16, 64, 256])
    p.add_argument("--out", default=os.environ.get("OUT"))
    p.add_argument("--dry-run", action="store_true", help="tiny sizes and counts: check the code path (CPU is fine)")
    a = p.parse_args(argv)
    a.dtype = a.dtype or ("bf16" if torch.device(a.device).type == "cuda" else "fp32")
    if a.dry_run:
        a.buckets, a.compile_buckets, a.iters, a.warmup, a.ttfa_reps = [1, 2, 3], [1], 2, 1, 1
        a.ttfa_background, a.codec_batches, a.max_len = [0, 2], [1, 2], min(a.max_len, 128)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    dev = torch.device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # small ops: one thread is fastest (and steady on a shared machine)
    rec = Recorder(a.out, meta(a))
    rec.log(f"gpu_bench: {rec.meta['device']}, size {a.size}, {a.dtype}, parts {a.parts}")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(a.size, dev, DTYPES[a.dtype])
    try:
        check_dtype(model, DTYPES[a.dtype], dev)
    except BackendUnavailable as e:
        rec.log(f"NOTE: {e}\nNOTE: falling back to fp32 (weights bytes double; the floor below uses fp32 bytes)")
        model, a.dtype = model.float(), "fp32"
    rec.add({"part": "setup", "impl": "model", "seconds": time.perf_counter() - t0,
             "params_backbone": model.n_params("backbone"), "params_depth": model.n_params("depth") if model.depth else 0})
    prompt = tok.prompt_tokens(TEXT)
    voice = np.zeros(model.cfg.speaker_dim, np.float32)
    with torch.no_grad():
        try:
            run_parts(a, model, rec, prompt, voice)
        finally:  # a part stopped by its time budget (SIGINT) still leaves gpu_bench.json
            rec.finish()
    return 1 if any("error" in r for r in rec.rows) else 0


def run_parts(a, model, rec: Recorder, prompt: list[int], voice: np.ndarray) -> None:
    for part in [p for p in a.parts.split(",") if p]:
        t1 = time.perf_counter()
        try:
            if part in ("graph", "eager", "compile"):
                part_frames(part, model, a, rec, prompt, voice)
            elif part == "ttfa":
                part_ttfa(model, a, rec, prompt, voice)
            elif part == "codec":
                part_codec(model, a, rec)
            else:
                raise ValueError(f"unknown part {part!r}")
        except Exception as e:  # one failed part does not lose the others
            rec.add({"part": part, "error": f"{type(e).__name__}: {e}"})
        if torch.device(a.device).type == "cuda":
            torch.cuda.empty_cache()  # the part's generator (its KV cache) is gone now
        rec.log(f"part {part}: {time.perf_counter() - t1:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
