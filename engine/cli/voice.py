"""`cadenza voice add | list | rm`: manage the voice store from the command line.

    cadenza voice add me.wav --name me --bundle bundles/tiny [--with-prompt --transcript "..."]
    cadenza voice list [--json]
    cadenza voice rm me
    cadenza say "Hello." --bundle bundles/tiny --voice me

Errors raise VoiceError / ValueError; `cadenza.engine.cli.main` prints them as one line (exit 2).
"""
from __future__ import annotations

import json
import sys

from ..voices.audio import MAX_SECONDS
from .common import one_line


def register(subparsers) -> None:
    """Add the `voice` command (with add / list / rm) to the `cadenza` parser."""
    p = subparsers.add_parser("voice", help="clone voices from short samples: add, list, rm")
    sub = p.add_subparsers(dest="voice_command", required=True)

    a = sub.add_parser("add", help="encode a voice sample (WAV, FLAC, OGG, ...; 1-60 s of speech) into the store")
    a.add_argument("sample", help="the audio file, or - to read it from stdin")
    a.add_argument("--name", required=True, help="the voice's name: letters, digits, '_', '.', '-' (max 64)")
    a.add_argument("--bundle", required=True, help="the bundle whose encoders make the voice (and that will use it)")
    a.add_argument("--with-prompt", action="store_true", help="also keep the sample's codec frames (first 10 s)")
    a.add_argument("--transcript", default=None, help="what the sample says (for the prompt)")
    a.add_argument("--replace", action="store_true", help="replace an existing voice of the same name")
    a.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="longest sample accepted, after trimming")
    a.add_argument("--store", default=None, help="the voice store directory (default: the user data directory)")
    a.set_defaults(func=cmd_add)

    ls = sub.add_parser("list", help="list the stored voices")
    ls.add_argument("--store", default=None)
    ls.add_argument("--json", action="store_true", help="print one JSON array")
    ls.set_defaults(func=cmd_list)

    rm = sub.add_parser("rm", help="remove a stored voice")
    rm.add_argument("name")
    rm.add_argument("--store", default=None)
    rm.set_defaults(func=cmd_rm)


def cmd_add(args) -> int:
    from ..contract.bundle import Bundle
    from ..voices.library import VoiceLibrary

    lib = VoiceLibrary(Bundle.load(args.bundle), args.store)
    sample = sys.stdin.buffer if args.sample == "-" else args.sample
    v = lib.add(sample, args.name, args.with_prompt, args.transcript, replace=args.replace,
                max_seconds=args.max_seconds)
    prompt = f", {v.prompt_codes.shape[1]} prompt frames" if v.prompt_codes is not None else ""
    print(f"added voice {v.name!r}: {v.duration:.2f} s of speech{prompt}, bundle {v.bundle_hash[:12]} "
          f"-> {lib.store.path(v.name)}")
    return 0


def cmd_list(args) -> int:
    from ..voices.store import VoiceStore

    store = VoiceStore(args.store)
    entries = store.list()
    if args.json:
        print(json.dumps(entries))
    elif not entries:
        print(f"no voices in {store.directory}")
    else:
        print(f"{'name':<24} {'seconds':>8} {'prompt':>6}  {'bundle':<12}  created")
        for e in entries:  # every field may come from a forged file: printed as plain characters only
            if "error" in e:
                print(f"{safe(e['name']):<24} unreadable: {safe(e['error'])}")
            else:
                print(f"{safe(e['name']):<24} {_seconds(e['duration_s']):>8} {'yes' if e['prompt'] else 'no':>6}  "
                      f"{safe(e['bundle_hash'] or '?')[:12]:<12}  {safe(e['created'])}")
    return 0


def safe(value) -> str:
    """`value` as text with no control characters (a terminal escape in a file stays harmless)."""
    return one_line(ValueError(str(value)))


def _seconds(v) -> str:
    return f"{v:8.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


def cmd_rm(args) -> int:
    from ..voices.store import VoiceStore

    store = VoiceStore(args.store)
    store.remove(args.name)
    print(f"removed voice {args.name!r} from {store.directory}")
    return 0
