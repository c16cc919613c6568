"""`cadenza say`: stream speech for a text into a WAV file written chunk by chunk."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import CliError


def register(sub) -> None:
    p = sub.add_parser("say", help="stream speech for TEXT into a WAV file (random weights: not speech)")
    p.add_argument("text", help="the text, or - to read UTF-8 from stdin")
    p.add_argument("--bundle", required=True)
    p.add_argument("-o", "--out", default="out.wav")
    p.add_argument("--backend", default="ort", help="a registered backend: ort (default), torch, torch-cuda")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--frames", type=int, default=None, help="force exactly N frames (benchmarks)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--voice", default=None, help="a built-in voice (Orpheus: tara, ...; CSM: a speaker id) or a "
                   "stored voice's name")
    p.add_argument("--voice-file", default=None, help="a voice file (.safetensors) to use instead of a name")
    p.add_argument("--store", default=None, help="the voice store directory")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=run)


def read_text(arg: str) -> str:
    if arg != "-":
        return arg
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"stdin is not valid UTF-8 (byte {e.start}); pass UTF-8 text")


def run(args) -> int:
    from ..api import Engine

    text = read_text(args.text)
    sampling = dict(seed=args.seed, greedy=args.greedy, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, repetition_penalty=args.repetition_penalty)
    with Engine.load(args.bundle, backend=args.backend, threads=args.threads, max_streams=1,
                     voice_store=args.store) as engine:
        if args.voice and args.voice_file:
            raise CliError("give --voice NAME or --voice-file PATH, not both")
        voice = Path(args.voice_file) if args.voice_file else args.voice
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
