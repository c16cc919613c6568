"""The `cadenza` command: export, say (and bench, gate, voice, registered by their modules).

Bad input exits non-zero with one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import CadenzaError

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the reference model to a bundle (needs the [export] extra)")
    p.add_argument("--size", default="tiny", help="tiny | small | 1b")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codebooks", type=int, default=None, help="override the number of codebooks K (1 = no depth decoder)")
    p.add_argument("--weights", default=None, help="a directory with model.safetensors + config.json (trained weights)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8: int8 weights in the transformer graphs (faster on the CPU; not bit-exact)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    try:
        from cadenza.export.to_onnx import main_export
    except ImportError as e:
        raise CliError(f"export needs PyTorch and onnx ({e.name} is missing): pip install 'cadenza-tts[export]'")
    over = {} if args.codebooks is None else {"n_codebooks": args.codebooks}
    if over and args.weights:
        raise CliError("--codebooks applies to a new model; trained weights (--weights) bring their own config")
    main_export(args.size, args.seed, args.out, args.weights, args.precision, **over)
    return 0


def _add_say(sub) -> None:
    p = sub.add_parser("say", help="stream speech for TEXT into a WAV file (random weights: not speech)")
    p.add_argument("text", help="the text, or - to read UTF-8 from stdin")
    p.add_argument("--bundle", required=True)
    p.add_argument("-o", "--out", default="out.wav")
    p.add_argument("--backend", default="ort")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--frames", type=int, default=None, help="force exactly N frames (benchmarks)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--voice", default=None, help="a voice name from the store, or a .safetensors voice file")
    p.add_argument("--store", default=None, help="the voice store directory")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=cmd_say)


def read_text(arg: str) -> str:
    if arg != "-":
        return arg
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"stdin is not valid UTF-8 (byte {e.start}); pass UTF-8 text")


def cmd_say(args) -> int:
    from .api import Engine

    text = read_text(args.text)
    sampling = dict(seed=args.seed, greedy=args.greedy, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, repetition_penalty=args.repetition_penalty)
    with Engine.load(args.bundle, backend=args.backend, threads=args.threads, max_streams=1) as engine:
        voice = resolve_voice(engine, args.voice, args.store)
        stream = engine.stream(text, voice, frames=args.frames, **sampling)
        tty = sys.stderr.isatty() and not args.json
        with stream, open_wav(args.out, engine.sample_rate) as wav:
            for chunk in stream:
                wav.write(chunk.pcm)  # incremental: the file grows chunk by chunk
                if tty:
                    m = stream.metrics
                    print(f"\r{m.audio_seconds:7.2f} s of audio, {m.frames} frames, {m.segments} segment(s)",
                          end="", file=sys.stderr)
        if tty:
            print(file=sys.stderr)
        summary = stream.metrics.summary()
        random = engine.bundle.manifest.get("random_weights", True)
    summary.update(out=args.out, bundle=str(args.bundle), backend=args.backend)
    if args.json:
        print(json.dumps(summary))
    else:
        note = " (random weights: not speech)" if random else ""
        print(f"wrote {args.out}: {summary['audio_s']:.2f} s of audio{note}\n"
              f"time-to-first-audio {summary['ttfa_s'] * 1e3:.1f} ms, real-time factor {summary['rtf']:.3f} "
              f"({summary['x_real_time']:.1f}x real time), {summary['frames']} frames, {summary['chunks']} chunks, "
              f"{summary['underruns']} underruns")
    return 0


def open_wav(path: str, sample_rate: int):
    """A 16-bit mono WAV (or any format soundfile knows from the extension), written incrementally."""
    import soundfile as sf

    try:
        return sf.SoundFile(path, "w", samplerate=sample_rate, channels=1,
                            subtype="PCM_16" if str(path).lower().endswith(".wav") else None)
    except (RuntimeError, TypeError, ValueError, OSError) as e:  # LibsndfileError is a RuntimeError
        raise CliError(f"cannot write {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def resolve_voice(engine, name: str | None, store: str | None):
    if name is None:
        return None
    from .voices import VoiceStore

    return VoiceStore(store).resolve(name, engine.bundle)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cadenza", description="Cadenza: low-latency streaming TTS inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_export(sub)
    _add_say(sub)
    for mod in ("cadenza.benchmarks.cli", "cadenza.engine.voice_cli"):
        try:
            __import__(mod, fromlist=["register"]).register(sub)
        except ModuleNotFoundError as e:  # a subcommand not built yet; a broken import still fails loudly
            if e.name != mod:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("cadenza: interrupted", file=sys.stderr)
        return 130
    except (CliError, CadenzaError, ValueError, OSError) as e:
        print(f"cadenza {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if getattr(args, "verbose", False):
            print(f"({time.perf_counter() - t0:.2f} s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
