"""Where a family's checkpoint comes from: a local directory, or a Hugging Face hub id.

A local directory is used as it is. Anything else is a hub id, fetched with
`huggingface_hub.snapshot_download` into the hub cache (untested on the machine
this was built on, which has no hub access; a hub that cannot be reached is a
`CheckpointError` saying so). The families' loaders then read the directory
with the families' own classes.
"""
from __future__ import annotations

import json
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, of another architecture, or does not fit its codec.
    The message names the fix."""


def resolve(source: str, what: str, allow: tuple[str, ...] = ("*.json", "*.safetensors", "*.bin", "*.model")) -> Path:
    """A local directory for `source` (a directory, or a hub id downloaded into the hub cache)."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    if p.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise CheckpointError(f"{what} {source!r} is neither a checkpoint directory nor a hub id (OWNER/NAME); "
                              "give the directory the checkpoint was downloaded to")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{what} {source!r} looks like a hub id, and downloading it needs huggingface_hub: "
                              "pip install 'cadenza-tts[export]'") from None
    try:
        return Path(snapshot_download(source, allow_patterns=list(allow)))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated repo, ...: one message
        raise CheckpointError(f"could not download {what} {source!r} from the Hugging Face hub "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); download it "
                              "where the hub is reachable and pass the directory instead") from None


def provenance(source: str) -> str:
    """How a bundle's manifest names its checkpoint: a local directory as an absolute path (so tools
    run from elsewhere find it again), a hub id as given."""
    p = Path(source).expanduser()
    return str(p.resolve()) if p.is_dir() else source


def read_config(directory: Path, what: str) -> dict:
    """The checkpoint's config.json, or a CheckpointError naming what is missing."""
    f = directory / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{what} {directory} has no config.json; is it a complete checkpoint directory?")
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what} {directory}/config.json is unreadable ({e})") from None


def require_architecture(config: dict, want: str, what: str, directory: Path) -> None:
    archs = config.get("architectures") or []
    if want not in archs:
        raise CheckpointError(f"{what} {directory} is a {archs or config.get('model_type')!r} checkpoint, not "
                              f"{want}; give a checkpoint of the right family (or pick the matching --family)")


def require_files(directory: Path, what: str, *names: str) -> None:
    """CheckpointError unless one of each group of alternatives ("a|b") exists in `directory`."""
    for name in names:
        if not any((directory / alt).is_file() for alt in name.split("|")):
            raise CheckpointError(f"{what} {directory} has no {name.replace('|', ' or ')}; download the whole "
                                  "checkpoint (weights, config and tokenizer)")
