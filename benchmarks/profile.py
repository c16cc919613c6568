"""Where a decode step's time goes: ONNX Runtime's profiler over the engine's own step, by operator type.

    python -m cadenza.benchmarks.profile --bundle bundles/small [--batch 1] [--steps 50] [--threads 2]

Builds the engine's generator (`OrtGenerator`), prefills `batch` rows and runs a few frames, then
reopens the backbone and depth sessions with the profiler on (the KV cache lives outside them), runs
`steps` frames (`frame()` + `step()`, the decode loop) and reads ONNX Runtime's trace: time per
operator type, its share, and per frame. Profiling adds a little overhead per node;
read the shares, not the absolute times.

Before that, with the profiler off, it splits the wall time of `steps` frames into the time inside
ONNX Runtime's runs and the rest (sampling, binding checks, cache views: Python around the graphs).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict

import numpy as np

from cadenza.engine.backends.ort.graph import open_session, session_options
from cadenza.engine.backends.ort.generator import OrtGenerator
from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.runtime.generator import PrefillItem, Row
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler

PROMPT = "Profiling one decode step of the engine, with a prompt of about seventy bytes."


def _profiled(bundle: Bundle, graph, threads: int, prefix: str) -> None:
    """Reopen `graph`'s session with ONNX Runtime's profiler on (same options otherwise)."""
    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = prefix
    graph.session = open_session(bundle, graph.role, so)
    graph.binding, graph._bound = graph.session.io_binding(), None


def _decoding(bundle: Bundle, batch: int, threads: int, params: SamplingParams) -> tuple[OrtGenerator, dict]:
    """A generator with `batch` rows past their prefill and 3 warm-up frames, and its graphs by role."""
    gen = OrtGenerator(bundle, batch, min(bundle.constants.max_seq_len, 512), threads)
    graphs = {"backbone": gen.backbone.graph}
    if gen.depth is not None:
        graphs["depth"] = gen.depth.graph
    K = bundle.constants.n_codebooks
    rows = [Row(StreamSampler(params, K), forced=True, max_frames=10**6) for _ in range(batch)]
    voice = np.zeros(bundle.constants.speaker_dim, np.float32)
    for r in rows:
        gen.add(r)
    gen.prefill([PrefillItem(r, bundle.prompt.tokens(bundle.tokenizer, PROMPT, None), voice) for r in rows])
    for _ in range(3):  # warm-up frames, not measured (nor is the prefill): the KV cache lives outside the sessions
        gen.frame()
        gen.step()
    return gen, graphs


class _TimedSession:
    """A session whose `run_with_iobinding` adds its wall time to `spent[0]`."""

    def __init__(self, session, spent: list):
        self._session, self._spent = session, spent

    def run_with_iobinding(self, *args):
        t0 = time.perf_counter()
        self._session.run_with_iobinding(*args)
        self._spent[0] += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self._session, name)


def split(bundle_dir: str, batch: int = 1, steps: int = 50, threads: int = 2) -> dict:
    """Milliseconds per decode frame (sampled: temperature 0.9, top-k 50, seed 0): the whole frame
    (`frame()` + `step()`), the part inside ONNX Runtime's runs, and the rest."""
    gen, graphs = _decoding(Bundle.load(bundle_dir, verify=False), batch, threads, SamplingParams(seed=0))
    spent = [0.0]
    for g in graphs.values():
        g.session = _TimedSession(g.session, spent)
    t0 = time.perf_counter()
    for _ in range(steps):
        gen.frame()
        gen.step()
    total = time.perf_counter() - t0
    gen.close()
    ms = 1e3 / steps
    return {"frame_ms": total * ms, "ort_ms": spent[0] * ms, "outside_ms": (total - spent[0]) * ms}


def profile(bundle_dir: str, batch: int = 1, steps: int = 50, threads: int = 2) -> dict:
    """role -> {op type: total microseconds} over `steps` decode frames at `batch` rows."""
    bundle = Bundle.load(bundle_dir, verify=False)
    gen, graphs = _decoding(bundle, batch, threads, SamplingParams(greedy=True))
    tmp = tempfile.mkdtemp(prefix="cadenza-profile-")
    for role, g in graphs.items():
        _profiled(bundle, g, threads, os.path.join(tmp, role))
    for _ in range(steps):
        gen.frame()
        gen.step()
    out = {}
    for role, g in graphs.items():
        trace = json.loads(open(g.session.end_profiling()).read())
        ops: dict[str, float] = defaultdict(float)
        for ev in trace:
            if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
                ops[ev["args"]["op_name"]] += ev["dur"]
        out[role] = dict(sorted(ops.items(), key=lambda kv: -kv[1]))
    gen.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    sp = split(a.bundle, a.batch, a.steps, a.threads)
    print(f"frame: {sp['frame_ms']:.2f} ms ({a.steps} frames, batch {a.batch}, sampled, profiler off): "
          f"{sp['ort_ms']:.2f} ms inside ONNX Runtime, {sp['outside_ms']:.2f} ms around it "
          f"(sampling, binding checks, cache views)")
    res = profile(a.bundle, a.batch, a.steps, a.threads)
    for role, ops in res.items():
        total = sum(ops.values())
        print(f"\n{role}: {total / 1e3 / a.steps:.2f} ms of kernels per frame ({a.steps} frames, batch {a.batch})")
        print("| operator | ms per frame | share |\n| --- | ---: | ---: |")
        for op, us in ops.items():
            print(f"| {op} | {us / 1e3 / a.steps:.3f} | {100 * us / total:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
