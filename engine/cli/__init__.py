"""The `cadenza` command: one module per command, registered explicitly below.

Bad input exits 2 with one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import CadenzaError
from .common import EXIT_USAGE, CliError, one_line


def build_parser() -> argparse.ArgumentParser:
    from cadenza.benchmarks import cli as bench_cli

    from . import bundle, export, say, serve, voice

    parser = argparse.ArgumentParser(prog="cadenza", description="Cadenza: low-latency streaming TTS inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (export, say, voice, bundle, serve, bench_cli):  # bench_cli adds `bench` and `gate`
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr and exit status 2 (set CADENZA_DEBUG=1 to
    see the traceback of an error that is not one of Cadenza's own)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("cadenza: interrupted", file=sys.stderr)
        return 130
    except (CliError, CadenzaError, ValueError, OSError) as e:
        print(f"cadenza {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - a hostile input must not print a traceback
        if os.environ.get("CADENZA_DEBUG"):
            raise
        print(f"cadenza {args.command}: error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE



__all__ = ["main", "build_parser", "CliError", "EXIT_USAGE"]
