"""`cadenza bundle keygen | sign | verify`: sign bundles and check them against trusted keys.

    cadenza bundle keygen --out keys/release
    cadenza bundle sign bundles/tiny --key keys/release
    cadenza bundle verify bundles/tiny --trusted-keys keys/release.pub
"""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bundle", help="sign bundles and verify them (hashes and signature)")
    cmds = p.add_subparsers(dest="bundle_command", required=True)
    k = cmds.add_parser("keygen", help="write a new Ed25519 key pair: OUT (private) and OUT.pub")
    k.add_argument("--out", required=True)
    k.set_defaults(func=cmd_keygen)
    s = cmds.add_parser("sign", help="sign a bundle's manifest (writes manifest.sig)")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, help="the private key (PEM) from `cadenza bundle keygen`")
    s.set_defaults(func=cmd_sign)
    v = cmds.add_parser("verify", help="check every file's hash, every graph's external data, and the signature "
                        "if keys are given")
    v.add_argument("bundle")
    v.add_argument("--trusted-keys", default=None, help="a file of PEM public keys (default: $CADENZA_TRUSTED_KEYS)")
    v.set_defaults(func=cmd_verify)


def cmd_keygen(args) -> int:
    from ..contract.signing import keygen

    private, public = keygen(args.out)
    print(f"wrote {private} (private: keep it secret) and {public} (public: give it to the operators)")
    return 0


def cmd_sign(args) -> int:
    from ..contract.bundle import Bundle
    from ..contract.signing import sign

    Bundle.load(args.bundle)  # sign only what verifies
    print(f"signed: {sign(args.bundle, Path(args.key).read_bytes())}")
    return 0


def cmd_verify(args) -> int:
    from ..contract.bundle import Bundle
    from ..contract.graph_io import load_graph

    keys = [Path(args.trusted_keys)] if args.trusted_keys else None
    b = Bundle.load(args.bundle, trusted_keys=keys)
    for role in b.manifest["graphs"]:  # each graph parsed, its external data checked against the manifest
        load_graph(b, role)
    print(f"ok: {b.path} ({b.family}, {len(b.manifest['files'])} files, content {b.hash[:12]})")
    return 0
