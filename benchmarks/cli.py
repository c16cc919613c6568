"""`cadenza bench` and `cadenza gate`, registered on the main CLI by `register(subparsers)`.

Bad arguments raise ValueError with one line (the main CLI prints it and exits 2).

    cadenza bench --bundle bundles/tiny --streams 1,4 --runs 3 --json bench.json --markdown --plot bench.png
    cadenza gate bench.json --rules benchmarks/gates.toml [--baseline stored.json]
"""
from __future__ import annotations

import sys
from pathlib import Path


def _ints(s: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers like 1,4,16, got {s!r}") from None
    return vals


def _names(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(subparsers) -> None:
    """Add `bench` and `gate` to the `cadenza` command."""
    p = subparsers.add_parser("bench", help="latency benchmark of Cadenza's engine against baselines")
    p.add_argument("--bundle", required=True, help="the bundle directory (from `cadenza export`)")
    p.add_argument("--baselines", default="torch-eager,ort-naive",
                   help="comma-separated: torch-eager, ort-naive (the reference family's loop driven naively), "
                        "reference (the bundle family's own pipeline), llama.cpp, ort-genai (peers on the same "
                        "weights, per backbone step; needs the [peers] extra); empty: Cadenza's engine only")
    p.add_argument("--streams", default="1,4,16",
                   help="concurrent stream counts, e.g. 1,4,16 (empty with peers: the peers section only)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per engine x scenario")
    p.add_argument("--warmup", type=int, default=1, help="discarded warm-up runs before the timed ones")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", default=None, help="the text every stream speaks")
    src.add_argument("--text-file", default=None, help="read the text from a UTF-8 file")
    p.add_argument("--frames", type=int, default=64, help="forced frames per stream (identical work everywhere)")
    p.add_argument("--threads", type=int, default=None, help="intra-op / torch threads (default: all cores)")
    p.add_argument("--spinning", action="store_true",
                   help="Cadenza's engine with spinning ONNX Runtime threads (Engine.load(spinning=True))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--positions", default=None,
                   help="also time one long stream and report step time near these cache positions, e.g. 100,2000")
    p.add_argument("--no-isolate", action="store_true",
                   help="run every engine in this process (faster; peak RSS is then the whole process's)")
    p.add_argument("--no-floor", action="store_true", help="skip the GEMV bandwidth / step floor measurement")
    g = p.add_argument_group("peers (--baselines llama.cpp,ort-genai)")
    g.add_argument("--peer-batches", default="1,8", help="batch sizes of the per-step timing")
    g.add_argument("--peer-rounds", type=int, default=10, help="rounds of the rotation")
    g.add_argument("--peer-steps", type=int, default=8, help="timed steps per engine per round")
    g.add_argument("--peer-context", type=int, default=100, help="positions of context the rows start at")
    g.add_argument("--peers-cache", default=None,
                   help="where converted models are cached (default: $CADENZA_PEERS_CACHE or the user cache)")
    g.add_argument("--llama-cpp-src", default=None,
                   help="a llama.cpp source tree with convert_hf_to_gguf.py (default: the one peer_setup unpacked)")
    p.add_argument("--json", required=True, help="write the result document here")
    p.add_argument("--plot", default=None, help="write latency CDFs and the concurrency curve to this PNG")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown on stdout")
    p.set_defaults(func=cmd_bench)

    g = subparsers.add_parser("gate", help="check a bench result against performance rules (exit 1 on failure)")
    g.add_argument("result", help="the JSON written by `cadenza bench --json`")
    g.add_argument("--baseline", default=None, help="a stored result of the same bundle to compare ratios with")
    g.add_argument("--rules", default=None, help="rules in TOML (default: the packaged benchmarks/gates.toml)")
    g.set_defaults(func=cmd_gate)


def _text(args) -> str:
    from .bench import DEFAULT_TEXT

    if args.text_file:
        try:
            return Path(args.text_file).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"--text-file {args.text_file} is not UTF-8 text") from None
    return DEFAULT_TEXT if args.text is None else args.text


def config_from_args(args):
    """The validated `BenchConfig` of the parsed flags (the bundle is checked by `run_bench`)."""
    from .bench import BenchConfig, default_threads
    from .peers import PeerConfig

    if not (Path(args.bundle) / "manifest.json").is_file():
        raise ValueError(f"--bundle {args.bundle} is not a Cadenza bundle (no manifest.json); "
                         "make one with `cadenza export --size tiny --out DIR`")
    return BenchConfig(bundle=args.bundle, baselines=_names(args.baselines), streams=_ints(args.streams, "--streams"),
                       runs=args.runs, warmup=args.warmup, text=_text(args), frames=args.frames,
                       threads=args.threads or default_threads(), spinning=args.spinning, seed=args.seed,
                       positions=_ints(args.positions or "", "--positions"), isolate=not args.no_isolate,
                       floor=not args.no_floor,
                       peer=PeerConfig(peers=[], batches=_ints(args.peer_batches, "--peer-batches"),
                                       rounds=args.peer_rounds, steps=args.peer_steps, context=args.peer_context,
                                       cache=args.peers_cache, llama_cpp_src=args.llama_cpp_src))


def cmd_bench(args) -> int:
    from .bench import run_bench, write_json
    from .report import markdown, plot

    cfg = config_from_args(args)
    if args.plot and not cfg.streams:
        raise ValueError("--plot draws the stream scenarios; give --streams (or leave --plot out)")
    doc = run_bench(cfg, progress=lambda s: print(s, file=sys.stderr, flush=True))
    path = write_json(doc, args.json)
    print(f"[bench] wrote {path}", file=sys.stderr)
    if args.plot:
        print(f"[bench] wrote {plot(doc, args.plot)}", file=sys.stderr)
    if args.markdown:
        print(markdown(doc))
    return 0


def cmd_gate(args) -> int:
    from .gate import run_gate

    code, report = run_gate(args.result, args.rules, args.baseline)
    print(report)
    return code
