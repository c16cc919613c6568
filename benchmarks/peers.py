"""`cadenza bench --baselines llama.cpp,ort-genai`: Cadenza's backbone step against the peers, same weights.

1. Convert (cached per bundle hash, `peer_convert`): the bundle's backbone -> a Hugging Face Llama
   checkpoint -> GGUF (llama.cpp's converter and quantizer) and ORT-GenAI (its builder), at the
   bundle's precision: fp32 -> f32 / fp32, int8 -> q8_0 / int8, int4 -> q4_0 / int4 (GenAI with
   the bundle's block size and accuracy level 4; q8_0 / q4_0 have 32-weight blocks, fixed).
2. Agreement: batch 1, the same ids at the same positions on every engine (a prompt of
   `agree_prompt` random tokens, then `agree_steps` fixed tokens one at a time); logits of the
   compared columns at each of those positions against Cadenza's backbone graph: cosine (min
   over positions), max |diff|, argmax agreement. Below `MIN_COSINE[precision]` the bench stops
   (`PeerError`): fp32 must agree to 0.99999.
3. Timing: for each batch size, every engine's rows start at `context` positions (one random
   prompt per row, untimed prefill); then `rounds` rounds, the engines in rotating order, each
   running `warm` untimed steps and `steps` timed ones (per-token backbone steps of the whole
   batch; rows go back to `context` before they pass `context + window`). Threads: the bench's
   `--threads` for every engine; spinning off for all (ONNX Runtime: allow_spinning 0 for Cadenza
   and GenAI; llama.cpp: OMP_WAIT_POLICY=PASSIVE). Reported: median and p10 ms per step,
   the raw samples, and `cadenza/<peer>` = Cadenza's median / the peer's (< 1: Cadenza faster).

The section also gives each batch's memory floor (`floor.py`): weight bytes + the rows' KV bytes
at `context` positions, over the measured GEMV bandwidth.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from cadenza.engine.contract.bundle import Bundle

from .peer_convert import PeerError, Target, cache_dir, genai, gguf, hf_checkpoint
from .peer_engines import EngineProcess

PEERS = ("llama.cpp", "ort-genai")
MIN_COSINE = {"fp32": 0.99999, "int8": 0.99, "int4": 0.5}  # int4: each engine quantizes on its own
DEFINITION = ("per-token backbone step of the whole batch, ms; ratio 'cadenza/<peer>.step_p50@<batch>' = Cadenza's "
              "median / the peer's (< 1: Cadenza faster); the same weights at the same precision, rows at ~context "
              "positions, engines in rotation, the bench's threads, spinning off for all")


@dataclass
class PeerConfig:
    peers: list[str]
    threads: int = 2
    batches: list[int] = field(default_factory=lambda: [1, 8])
    rounds: int = 10
    steps: int = 8
    warm: int = 2
    context: int = 100
    window: int = 200
    agree_prompt: int = 24
    agree_steps: int = 8
    seed: int = 0
    cache: str | None = None
    llama_cpp_src: str | None = None

    def check(self) -> None:
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise ValueError(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
        for name in ("rounds", "steps", "context", "window", "agree_prompt", "agree_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"peers: {name} must be >= 1")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"peers: batch sizes must be positive, got {self.batches}")


def compared(bundle: Bundle) -> tuple[tuple[int, int], tuple[int, int]]:
    """(logits columns compared, token ids drawn), in the checkpoint's vocabulary ids: the reference
    family's C + 1 columns and codebook-0 codes (3 and up); a flat layout's frame position 0 (its ids)."""
    lay = bundle.layout
    lo, hi = lay.allowed[0]
    # never ids 0-2: the converted checkpoint names them pad / bos / eos, and GenAI masks pad ids in a prompt
    ids = (max(lay.logits_offset + lo, 3), lay.logits_offset + hi)
    if lay.kind == "flat":
        return ids, ids
    return (lay.logits_offset, lay.logits_offset + lay.logits_size), ids


def prepare(bundle: Bundle, pc: PeerConfig, say: Callable[[str], None]) -> dict[str, str]:
    """Convert (or find in the cache) the peers' models; returns peer -> model path."""
    target = Target.of(bundle)
    cache = cache_dir(bundle, pc.cache)
    say(f"[peers] converting the {target.tag} backbone for {', '.join(pc.peers)} (cache {cache})")
    hf = hf_checkpoint(bundle, cache)
    out = {}
    if "llama.cpp" in pc.peers:
        out["llama.cpp"] = str(gguf(hf, target, cache, pc.llama_cpp_src))
    if "ort-genai" in pc.peers:
        out["ort-genai"] = str(genai(hf, target, cache))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Per-position cosine (min, mean), max |diff| and argmax agreement of two [S, n] logit arrays."""
    cos = [cosine(a, b) for a, b in zip(ours, theirs)]
    return {"cosine_min": min(cos), "cosine_mean": float(np.mean(cos)),
            "max_abs": float(np.abs(ours - theirs).max()),
            "argmax_agree": float(np.mean(ours.argmax(-1) == theirs.argmax(-1))), "positions": len(cos)}


def stats(samples: list[float]) -> dict:
    ms = np.asarray(samples) * 1e3
    return {"median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)), "n": len(ms),
            "samples_ms": [round(float(x), 4) for x in ms]}


def _agreement(procs: dict, bundle: Bundle, pc: PeerConfig, precision: str, rng) -> dict:
    _, (lo, hi) = compared(bundle)
    prompt, steps = rng.integers(lo, hi, pc.agree_prompt), rng.integers(lo, hi, pc.agree_steps)
    logits = {}
    for name, p in procs.items():
        p.open(1)
        logits[name] = p.agree(prompt, steps)
    out = {}
    for name in pc.peers:
        out[name] = r = compare(logits["cadenza"], logits[name])
        if r["cosine_min"] < MIN_COSINE[precision]:
            raise PeerError(f"{name}'s logits disagree with Cadenza's on the same ids ({precision}: cosine "
                            f"{r['cosine_min']:.6f} < {MIN_COSINE[precision]}, max |diff| {r['max_abs']:.3g}); "
                            "the conversion is wrong, not slow")
    return out


def _time(procs: dict, bundle: Bundle, pc: PeerConfig, B: int, rng, say) -> dict:
    _, (lo, hi) = compared(bundle)
    prompt, tokens = rng.integers(lo, hi, (B, pc.context)), rng.integers(lo, hi, B)
    names = list(procs)
    for p in procs.values():
        p.open(B)
        p.prepare(prompt, tokens, pc.window)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(pc.rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            samples[name] += procs[name].time(pc.warm, pc.steps)
        say(f"[peers] batch {B}: round {r + 1}/{pc.rounds}: " + ", ".join(
            f"{n} {np.median(samples[n][-pc.steps:]) * 1e3:.2f} ms" for n in names))
    return {n: stats(s) for n, s in samples.items()}


def run_peers(bundle_path: str, pc: PeerConfig, bandwidth: dict | None = None,
              say: Callable[[str], None] = lambda s: None) -> dict:
    """The bench document's `peers` section (see the module docstring)."""
    pc.check()
    bundle = Bundle.load(bundle_path, verify=False)
    target = Target.of(bundle)
    models = prepare(bundle, pc, say)
    columns, _ = compared(bundle)
    length = pc.context + pc.window + pc.warm + pc.steps + 8
    common = {"threads": pc.threads, "length": max(length, pc.agree_prompt + pc.agree_steps + 8), "columns": columns}
    procs = {"cadenza": EngineProcess("cadenza", bundle=str(bundle.path), **common)}
    for name in pc.peers:
        arg = {"llama.cpp": "gguf", "ort-genai": "path"}[name]
        procs[name] = EngineProcess(name, **{arg: models[name]}, **common)
    rng = np.random.default_rng(pc.seed)
    try:
        say("[peers] logits agreement, batch 1")
        agreement = _agreement(procs, bundle, pc, target.precision, rng)
        steps = {str(B): _time(procs, bundle, pc, B, rng, say) for B in pc.batches}
    finally:
        for p in procs.values():
            p.close()
    ratios = {f"cadenza/{peer}.step_p50@{B}": steps[B]["cadenza"]["median_ms"] / steps[B][peer]["median_ms"]
              for B in steps for peer in pc.peers}
    section = {"definition": DEFINITION, "precision": target.precision, "block_size": target.block_size,
               "gguf_type": target.gguf_type, "models": models, "config": asdict(pc), "agreement": agreement,
               "steps": steps, "ratios": ratios, "versions": _versions()}
    if bandwidth:
        section["floor_ms"] = _floors(bundle, pc, bandwidth)
    return section


def _floors(bundle: Bundle, pc: PeerConfig, bandwidth: dict) -> dict:
    from .floor import step_weight_bytes

    c = bundle.constants
    kv_row = 2 * c.backbone_layers * c.kv_heads * c.head_dim * bundle.kv_itemsize * pc.context
    wb = step_weight_bytes(bundle)
    return {str(B): (wb + B * kv_row) / (bandwidth["best_gb_s"] * 1e9) * 1e3 for B in pc.batches}


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("onnxruntime", "onnxruntime-genai", "llama_cpp_python"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def markdown(section: dict) -> list[str]:
    """The peers tables: agreement, then per batch the engines' medians and p10s and the ratios."""
    s = section
    block = f", block {s['block_size']}" if s.get("block_size") else ""
    out = ["", f"Peers on the same weights ({s['precision']}{block}; llama.cpp {s['gguf_type']}): per-token backbone "
               f"step of the whole batch, {s['config']['rounds']} rounds x {s['config']['steps']} steps per engine in "
               f"rotation, ~{s['config']['context']} positions of context, {s['config']['threads']} threads, "
               "spinning off:", "",
           "| peer | cosine min | max abs diff | argmax agree |", "| --- | ---: | ---: | ---: |"]
    for name, a in s["agreement"].items():
        out.append(f"| {name} | {a['cosine_min']:.6f} | {a['max_abs']:.3g} | {a['argmax_agree']:.2f} |")
    out += ["", "| batch | engine | median ms | p10 ms | cadenza / engine | floor ms |",
            "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for B, row in s["steps"].items():
        for name, st in row.items():
            ratio = s["ratios"].get(f"cadenza/{name}.step_p50@{B}")
            floor = s.get("floor_ms", {}).get(B)
            out.append(f"| {B} | {name} | {st['median_ms']:.2f} | {st['p10_ms']:.2f} | "
                       f"{'-' if ratio is None else f'{ratio:.2f}'} | {'-' if floor is None else f'{floor:.2f}'} |")
    return out
