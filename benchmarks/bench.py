"""`cadenza bench`: every engine x scenario on one bundle, into one JSON document.

The document (schema `cadenza-bench/1`):

- `meta`: commit, machine (host, CPU model, cores), threads, library
  versions, bundle hash and config name, text, frames, seed, sampling, date.
- `definitions`: what each metric means (and its unit).
- `rows`: one per engine x scenario (`kind` "streams"), plus one per engine
  for step time vs position (`kind` "positions", with `--positions`); each
  with `metrics` and the raw `samples`.
- `ratios`: Cadenza's engine against each baseline, as a speedup that is > 1
  when Cadenza is better (see `ratios.definition`), keyed
  `"ort/<baseline>.<metric>@<streams>"`.
- `floor`: the memory floor of a backbone step: its weight bytes over a measured
  GEMV read bandwidth (`floor.py`; `--no-floor` skips it).
- `peers` (with `--baselines llama.cpp` and/or `ort-genai`): the backbone converted
  for llama.cpp and ORT-GenAI at the bundle's precision, logits agreement, and
  per-token step times at batch 1 and 8 in rotation (`peers.py`); ratios
  `"cadenza/<peer>.step_p50@<batch>"` (Cadenza's time / the peer's). On a
  flat-layout (Orpheus) bundle, `llama.cpp` also runs as a stream baseline: an
  orpheus-cpp-style frame loop (`orpheus_cpp.py`).

Example:
    >>> doc = run_bench(BenchConfig(bundle="bundles/tiny", streams=[1], runs=1))
    >>> doc["ratios"]["values"]["ort/torch-eager.frame_p50@1"]
    3.4
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from cadenza.engine.contract import text as tok
from cadenza.engine.contract.bundle import Bundle

from .baselines import BASELINES, REFERENCE_FAMILY_ONLY, SAMPLING
from .peers import PEERS, PeerConfig
from .measure import HIGHER_IS_BETTER, LOWER_IS_BETTER, definitions, summarize
from .runners import ENGINE
from .workers import Job, interleave, start_workers

SCHEMA = "cadenza-bench/1"
DEFAULT_TEXT = "Hello from Cadenza. This sentence is the latency benchmark's prompt."
RATIO_DEFINITION = ("speedup of Cadenza's engine over a baseline: baseline / ort for lower-is-better metrics, "
                    "ort / baseline for higher-is-better ones (x_real_time, agg_x_real_time); > 1 means Cadenza "
                    "is better, < 1 worse. Key: 'ort/<baseline>.<metric>@<streams>'")


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), else the CPU count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class BenchConfig:
    """What `cadenza bench` runs (the CLI flags, validated by `check`)."""

    bundle: str
    baselines: list[str] = field(default_factory=lambda: [b for b in BASELINES if b not in PEERS])
    streams: list[int] = field(default_factory=lambda: [1, 4, 16])
    runs: int = 3
    warmup: int = 1
    text: str = DEFAULT_TEXT
    frames: int = 64
    threads: int = field(default_factory=lambda: default_threads())
    seed: int = 0
    positions: list[int] = field(default_factory=list)
    isolate: bool = True  # one worker process per engine x scenario
    spinning: bool = False  # Cadenza's engine with spinning intra-op threads (Engine.load(spinning=True))
    floor: bool = True  # measure the GEMV bandwidth and the step floor
    peer: PeerConfig | None = None  # how the peers run (batches, rounds, cache); None: the defaults
    prompt_len: int = 0  # set by `check`: the prompt's positions on the bundle (its voice prefix included)

    @property
    def peers(self) -> list[str]:
        """The baselines that are peers (timed per backbone step on converted weights)."""
        return [b for b in self.baselines if b in PEERS]

    def stream_baselines(self, bundle: Bundle) -> list[str]:
        """The baselines that serve streams: all but the peers, and llama.cpp's frame loop on a flat layout."""
        out = [b for b in self.baselines if b not in PEERS]
        if "llama.cpp" in self.baselines and bundle.layout.kind == "flat":
            out.append("llama.cpp")
        return out

    def check(self, bundle: Bundle) -> None:
        """Raise ValueError (one line) for settings that cannot run on `bundle`."""
        unknown = [b for b in self.baselines if b not in BASELINES and b not in PEERS]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted([*BASELINES, *PEERS])}")
        wrong = [b for b in self.baselines if b in REFERENCE_FAMILY_ONLY and bundle.family != "cadenza-reference"]
        if wrong:
            raise ValueError(f"baseline(s) {wrong} drive the reference family; for a {bundle.family} bundle use "
                             "--baselines reference (the family's own pipeline)")
        prefix = 1 if bundle.prompt.voice_kind == "embedding" else 0  # the reference family's VOICE slot
        self.prompt_len = prefix + len(bundle.prompt.tokens(bundle.tokenizer, tok.check_text(self.text), None))
        for name, v, lo in (("runs", self.runs, 1), ("warmup", self.warmup, 0), ("frames", self.frames, 1),
                            ("threads", self.threads, 1), ("seed", self.seed, 0)):
            if v < lo:
                raise ValueError(f"--{name} must be >= {lo}, got {v}")
        if (not self.streams and not self.peers) or (self.streams and min(self.streams) < 1):
            raise ValueError(f"--streams must be positive counts like 1,4,16 (empty only with peer baselines), "
                             f"got {self.streams}")
        if self.peers:
            self.peer_config().check()
        per_frame = bundle.layout.tokens_per_frame
        room = (bundle.constants.max_seq_len - self.prompt_len) // per_frame
        if self.frames > room:
            raise ValueError(f"--frames {self.frames} plus the {self.prompt_len}-token prompt exceed the model's "
                             f"{bundle.constants.max_seq_len} positions; use --frames <= {room} or a shorter text")
        bad = [p for p in self.positions if not self.prompt_len < p < bundle.constants.max_seq_len]
        if bad:
            raise ValueError(f"--positions {bad} must lie between the prompt ({self.prompt_len} tokens) "
                             f"and the model's {bundle.constants.max_seq_len} positions")

    def peer_config(self) -> PeerConfig:
        pc = self.peer or PeerConfig(peers=[])
        pc.peers, pc.threads, pc.seed = self.peers, self.threads, self.seed
        return pc

    def long_frames(self, max_len: int) -> int:
        """Frames of the long stream that reaches past the highest position (+8 to fill its bin)."""
        return min(max(self.positions) + 9, max_len) - self.prompt_len if self.positions else 0


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Run every engine x scenario and return the JSON document (see the module docstring)."""
    cache = cfg.peer.cache if cfg.peer is not None and cfg.peers else None
    if not cache:
        return _run_bench(cfg, progress)
    before = os.environ.get("CADENZA_PEERS_CACHE")
    os.environ["CADENZA_PEERS_CACHE"] = cache  # the llama.cpp frame loop's worker process finds the converted model there
    try:
        return _run_bench(cfg, progress)
    finally:  # this process's environment as it was
        if before is None:
            os.environ.pop("CADENZA_PEERS_CACHE", None)
        else:
            os.environ["CADENZA_PEERS_CACHE"] = before


def _run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None) -> dict:
    say = progress or (lambda s: None)
    bundle = Bundle.load(cfg.bundle, verify=False)  # Engine.load verifies every file hash
    cfg.check(bundle)
    meta = collect_meta(cfg, bundle)
    doc_extra = {}
    if cfg.floor:
        from .floor import floor_section

        say(f"[bench] floor: GEMV read bandwidth with {cfg.threads} thread(s)")
        doc_extra["floor"] = floor_section(bundle, cfg.threads)
    if cfg.peers:
        from .peers import run_peers

        pc = cfg.peer_config()
        bandwidth = doc_extra["floor"]["bandwidth"] if "floor" in doc_extra else None
        doc_extra["peers"] = run_peers(cfg.bundle, pc, bandwidth, say)
    engines = [ENGINE, *cfg.stream_baselines(bundle)]
    meta["engines"] = engines
    rows = []
    for n in cfg.streams:
        say(f"[bench] {n} stream(s): loading {', '.join(engines)}; {cfg.warmup} warm-up + {cfg.runs} timed runs, "
            "engines in rotating order")
        jobs = [_job(cfg, bundle, e, n, with_positions=n == cfg.streams[0]) for e in engines]
        results = interleave(start_workers(jobs, cfg.isolate), cfg.runs, cfg.warmup, say)
        for engine, res in zip(engines, results):
            rows += make_rows(engine, n, res)
    return {"schema": SCHEMA, "meta": meta, "definitions": definitions(), "rows": rows,
            "ratios": {"definition": RATIO_DEFINITION, "values": compute_ratios(rows)}, **doc_extra}


def _job(cfg: BenchConfig, bundle: Bundle, engine: str, n: int, with_positions: bool) -> Job:
    positions = list(cfg.positions) if with_positions else []
    return Job(engine, str(cfg.bundle), cfg.threads, n, cfg.text, cfg.frames, cfg.seed, positions, cfg.prompt_len,
               cfg.long_frames(bundle.constants.max_seq_len) if positions else 0, cfg.spinning)


def make_rows(engine: str, n: int, res: dict) -> list[dict]:
    """The row(s) of one job's result: the scenario, and step time vs position if measured."""
    metrics, samples = summarize(res["runs"], res["cores"])
    metrics.update(peak_rss=res["peak_rss"], load=res["load_s"])
    rows = [{"engine": engine, "kind": "streams", "streams": n, "cores": res["cores"],
             "metrics": metrics, "samples": samples}]
    if res.get("long"):
        long = res["long"]
        rows.append({"engine": engine, "kind": "positions", "streams": 1, "frames": long["frames"],
                     "metrics": long["metrics"], "samples": {"frame_latency_s": long["frame_latency_s"]}})
    return rows


def speedup(metric: str, ours: float, theirs: float) -> float | None:
    """baseline / ours for lower-is-better metrics, ours / baseline for higher-is-better ones."""
    num, den = (ours, theirs) if metric in HIGHER_IS_BETTER else (theirs, ours)
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (num, den)) or not den:
        return None
    return num / den


def compute_ratios(rows: list[dict]) -> dict[str, float | None]:
    """`"ort/<baseline>.<metric>@<streams>"` -> speedup, for every comparable metric."""
    ours = {(r["kind"], r["streams"]): r for r in rows if r["engine"] == ENGINE}
    out = {}
    for r in rows:
        mine = ours.get((r["kind"], r["streams"]))
        if r["engine"] == ENGINE or mine is None:
            continue
        for metric, theirs in r["metrics"].items():
            if metric in LOWER_IS_BETTER or metric in HIGHER_IS_BETTER or metric.startswith("step_p50_pos"):
                out[f"{ENGINE}/{r['engine']}.{metric}@{r['streams']}"] = speedup(metric, mine["metrics"][metric],
                                                                                theirs)
    return out


def _commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        out = None
    return out.stdout.strip() if out is not None and out.returncode == 0 else os.environ.get("GITHUB_SHA")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("cadenza-tts", "numpy", "onnxruntime", "torch", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)  # no import: torch stays out of this process
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def collect_meta(cfg: BenchConfig, bundle: Bundle) -> dict:
    """Where and how the numbers were measured."""
    c = bundle.constants
    return {
        "commit": _commit(), "hostname": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count(),
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": "cpu", "threads": cfg.threads, "spinning": cfg.spinning, "platform": platform.platform(), "versions": _versions(),
        "bundle": str(cfg.bundle), "bundle_hash": bundle.hash,
        "bundle_config": bundle.manifest.get("size") or bundle.family,
        "text": cfg.text, "prompt_tokens": cfg.prompt_len, "frames": cfg.frames,
        "audio_s_per_stream": cfg.frames * c.hop / c.sample_rate, "seed": cfg.seed, "sampling": SAMPLING,
        "engines": [ENGINE, *cfg.baselines], "streams": cfg.streams, "runs": cfg.runs, "warmup": cfg.warmup,
        "positions": cfg.positions, "isolated": cfg.isolate, "argv": sys.argv[1:],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg),
    }


def _clean(x):
    """NaN / inf -> None, so the file is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(doc: dict, path: str | Path) -> Path:
    p = Path(path)
    p.write_text(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")
    return p
