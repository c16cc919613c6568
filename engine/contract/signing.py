"""Bundle signatures: who made a bundle, checked against keys the operator trusts.

The manifest's content hash covers every file's SHA-256, so an Ed25519 signature over
that hash (`manifest.sig`, beside the manifest) authenticates the whole bundle. When the
operator configures trusted public keys (`Engine.load(..., trusted_keys=...)` or the
environment variable `CADENZA_TRUSTED_KEYS` naming a file of PEM public keys), a bundle
without a signature by one of them is refused. Without configured keys nothing is
checked: the hashes then only catch damage, not a malicious author.

    cadenza bundle keygen --out keys/release         # keys/release (private, 0600) + keys/release.pub
    cadenza bundle sign bundles/tiny --key keys/release
    CADENZA_TRUSTED_KEYS=keys/release.pub cadenza say "Hi." --bundle bundles/tiny

Needs the `cryptography` package (the `[sign]` extra) only when signing or checking.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from ..errors import BundleError

SIGNATURE = "manifest.sig"
KEYS_ENV = "CADENZA_TRUSTED_KEYS"


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError("bundle signatures need the cryptography package: pip install 'cadenza-tts[sign]'") from None
    return serialization, ed25519


def keygen(out: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: `out` (private, PEM, mode 0600) and `out.pub` (public, PEM)."""
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    pub = out.with_name(out.name + ".pub")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return out, pub


def sign(bundle_dir: str | Path, private_key_pem: bytes) -> Path:
    """Sign the bundle's content hash; writes `manifest.sig` beside the manifest."""
    serialization, ed25519 = _crypto()
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError("the signing key is not an Ed25519 private key (make one with `cadenza bundle keygen`)")
    d = Path(bundle_dir)
    digest = json.loads((d / "manifest.json").read_text())["content_sha256"]
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    doc = {"algorithm": "ed25519", "content_sha256": digest,
           "signature": base64.b64encode(key.sign(digest.encode())).decode(),
           "public_key": base64.b64encode(pub).decode()}
    (d / SIGNATURE).write_text(json.dumps(doc, indent=2))
    return d / SIGNATURE


def trusted_keys(keys=None) -> list[bytes]:
    """Raw Ed25519 public keys: `keys` (PEM bytes, or paths of PEM files), else `$CADENZA_TRUSTED_KEYS`'s file."""
    if keys is None:
        env = os.environ.get(KEYS_ENV)
        keys = [Path(env)] if env else []
    serialization, ed25519 = _crypto() if keys else (None, None)
    out = []
    for k in keys:
        pem = Path(k).read_bytes() if isinstance(k, (str, os.PathLike)) else bytes(k)
        for block in pem.split(b"-----END PUBLIC KEY-----"):
            if b"BEGIN PUBLIC KEY" in block:
                key = serialization.load_pem_public_key(block + b"-----END PUBLIC KEY-----\n")
                if not isinstance(key, ed25519.Ed25519PublicKey):
                    raise BundleError("a trusted key is not an Ed25519 public key")
                out.append(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return out


def check(bundle_dir: Path, content_sha256: str, keys: list[bytes]) -> None:
    """BundleError unless `manifest.sig` is a valid signature of `content_sha256` by one of `keys`."""
    if not keys:
        return
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    p = Path(bundle_dir) / SIGNATURE
    if p.is_symlink() or not p.is_file():
        raise BundleError(f"{bundle_dir} is not signed ({SIGNATURE} missing) and trusted keys are configured; "
                          "load bundles signed by a trusted key (`cadenza bundle sign`)")
    try:
        doc = json.loads(p.read_bytes()[:4096])
        sig = base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{p} is not a signature file; sign the bundle again") from None
    for raw in keys:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(sig, content_sha256.encode())
            return
        except InvalidSignature:
            continue
    raise BundleError(f"{bundle_dir} is not signed by a trusted key (or was changed after signing); "
                      "refusing to load it")
