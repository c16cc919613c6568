"""`cadenza export`: a model -> a bundle. Needs the [export] extra.

    cadenza export --size tiny --out bundles/tiny                              # the reference family
    cadenza export --family orpheus --checkpoint DIR_OR_HUB_ID [--codec DIR_OR_HUB_ID] --out DIR
    cadenza export --family csm --checkpoint DIR_OR_HUB_ID --out DIR
    ... [--graphs fused|portable] [--precision fp32|fp16|int8|int4] [--block-size 32|128]
"""
from __future__ import annotations

from .common import CliError


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to a bundle (needs the [export] extra)")
    p.add_argument("--family", default="cadenza", choices=["cadenza", "orpheus", "csm"],
                   help="cadenza: the reference family (--size); orpheus / csm: a checkpoint (--checkpoint)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--graphs", default="fused", choices=["fused", "portable"],
                   help="fused: ONNX Runtime's fused operators (the fast CPU path); portable: standard ONNX "
                        "operators only, for other runtimes")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8", "int4"],
                   help="the transformer weights: int8 / int4 are block-quantised (not bit-exact); fp16 and int4 "
                        "need --graphs fused")
    p.add_argument("--block-size", type=int, default=32, choices=[16, 32, 64, 128, 256],
                   help="int8 / int4: weights per quantisation block")
    ref = p.add_argument_group("the reference family (--family cadenza)")
    ref.add_argument("--size", default="tiny", help="tiny | small | 1b")
    ref.add_argument("--seed", type=int, default=0)
    ref.add_argument("--codebooks", type=int, default=None, help="override the number of codebooks K (1 = no depth decoder)")
    ref.add_argument("--weights", default=None, help="a directory with model.safetensors + config.json (trained weights)")
    ref.add_argument("--torch-weights", action="store_true",
                     help="also store the PyTorch weights (for the torch backends and the torch-eager baseline)")
    fam = p.add_argument_group("a published family (--family orpheus | csm)")
    fam.add_argument("--checkpoint", default=None, help="the checkpoint: a local directory or a Hugging Face hub id")
    fam.add_argument("--codec", default=None, help="orpheus: the SNAC codec (default hubertsiuzdak/snac_24khz)")
    fam.add_argument("--max-len", type=int, default=2048, help="KV positions per stream the bundle is built for")
    fam.add_argument("--window", default="3,3",
                     help="orpheus: SNAC context frames LEFT,RIGHT (3,3 is exact; smaller is faster and approximate)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:  # build time only: the run-time commands never import cadenza.export
        from cadenza.export.families import main_family_export
        from cadenza.export.onnx.to_onnx import main_export
    except ImportError as e:
        raise CliError(f"export needs PyTorch, onnx and transformers ({e.name} is missing): "
                       "pip install 'cadenza-tts[export]'")
    if args.family == "cadenza":
        if args.checkpoint or args.codec:
            raise CliError("--checkpoint / --codec belong to --family orpheus or csm; the reference family "
                           "takes --size (and --weights)")
        over = {} if args.codebooks is None else {"n_codebooks": args.codebooks}
        if over and args.weights:
            raise CliError("--codebooks applies to a new model; trained weights (--weights) bring their own config")
        main_export(args.size, args.seed, args.out, args.weights, args.precision, args.graphs, args.block_size,
                    args.torch_weights, **over)
        return 0
    if not args.checkpoint:
        raise CliError(f"--family {args.family} needs --checkpoint DIR_OR_HUB_ID")
    if args.torch_weights:
        raise CliError("--torch-weights applies to the reference family (the torch backends run it only)")
    main_family_export(args.family, args.checkpoint, args.out, args.codec, max_seq_len=args.max_len,
                       window=_window(args.window), form=args.graphs, precision=args.precision,
                       block_size=args.block_size)
    return 0


def _window(s: str) -> tuple[int, int]:
    try:
        left, right = (int(x) for x in s.split(","))
    except ValueError:
        raise CliError(f"--window takes LEFT,RIGHT context frames like 3,3, got {s!r}") from None
    if not (0 <= left <= 16 and 0 <= right <= 16):
        raise CliError(f"--window frames must be 0..16, got {s!r}")
    return left, right
