"""`cadenza export`: the reference model (or trained weights) -> a bundle. Needs the [export] extra."""
from __future__ import annotations

from .common import CliError


def register(sub) -> None:
    p = sub.add_parser("export", help="export the reference model to a bundle (needs the [export] extra)")
    p.add_argument("--size", default="tiny", help="tiny | small | 1b")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codebooks", type=int, default=None, help="override the number of codebooks K (1 = no depth decoder)")
    p.add_argument("--weights", default=None, help="a directory with model.safetensors + config.json (trained weights)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8: int8 weights in the transformer graphs (faster on the CPU; not bit-exact)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:  # build time only: the run-time commands never import cadenza.export
        from cadenza.export.onnx.to_onnx import main_export
    except ImportError as e:
        raise CliError(f"export needs PyTorch and onnx ({e.name} is missing): pip install 'cadenza-tts[export]'")
    over = {} if args.codebooks is None else {"n_codebooks": args.codebooks}
    if over and args.weights:
        raise CliError("--codebooks applies to a new model; trained weights (--weights) bring their own config")
    main_export(args.size, args.seed, args.out, args.weights, args.precision, **over)
    return 0
