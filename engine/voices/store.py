"""The voice store: a directory of `NAME.safetensors` voice files, and the bundle check.

Example:
    >>> store = VoiceStore("voices/")
    >>> voice = store.resolve("me", bundle)  # VoiceError if it was made with another bundle
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import VoiceError
from .voice import ADD_HINT, SUFFIX, Voice, check_name


def check_compatible(voice: Voice, bundle, source: str = "") -> Voice:
    """VoiceError unless `voice` was made with this bundle (same model family and bundle hash)."""
    fam, want = bundle.manifest.get("family"), bundle.hash
    where = f" ({source})" if source else ""
    if voice.meta.get("family") != fam or voice.bundle_hash != want:
        raise VoiceError(f"voice {voice.name!r}{where} was made with {voice.meta.get('family')!r} bundle "
                         f"{str(voice.bundle_hash)[:12]}, not this {fam!r} bundle {want[:12]} ({bundle.path}); "
                         f"re-add the voice with this bundle: `cadenza voice add SAMPLE.wav --name {voice.name} "
                         f"--bundle {bundle.path} --replace`")
    if voice.embedding.shape != (bundle.constants.speaker_dim,):
        raise VoiceError(f"voice {voice.name!r}{where} has a {voice.embedding.shape} embedding; this bundle "
                         f"needs {bundle.constants.speaker_dim}; {ADD_HINT}")
    return voice


class VoiceStore:
    """A directory of `NAME.safetensors` voice files. Names are immutable unless replaced explicitly.

    Args:
        directory: default `platformdirs.user_data_dir("cadenza")/voices` (created on first add).
    """

    def __init__(self, directory: str | Path | None = None):
        if directory is None:
            from platformdirs import user_data_dir

            directory = Path(user_data_dir("cadenza")) / "voices"
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}{SUFFIX}"

    def add(self, voice: Voice, replace: bool = False) -> Path:
        """Store `voice` under its name. An existing name raises VoiceError unless replace=True."""
        data_path = self.path(voice.name)
        try:
            voice.save(data_path, replace=replace)
        except FileExistsError:
            raise VoiceError(f"a voice named {voice.name!r} already exists in {self.directory}; pick another "
                             "name, remove it (`cadenza voice rm NAME`) or replace it (--replace)") from None
        return data_path

    def get(self, name: str) -> Voice:
        p = self.path(name)
        if not p.is_file():
            raise VoiceError(f"no voice named {name!r} in {self.directory}; `cadenza voice list --store "
                             f"{self.directory}` shows the voices, `cadenza voice add` adds one")
        return Voice.load(p)

    def list(self) -> list[dict]:
        """One dict per stored voice, sorted by name: name, duration_s, bundle_hash, created, prompt, path
        (and `error` instead of the details for an unreadable file)."""
        out = []
        for p in sorted(self.directory.glob(f"*{SUFFIX}")) if self.directory.is_dir() else []:
            if p.name.startswith("."):
                continue
            try:
                v = Voice.load(p)
                out.append({"name": v.name, "duration_s": v.duration, "bundle_hash": v.bundle_hash,
                            "created": v.meta.get("created"), "prompt": v.prompt_codes is not None, "path": str(p)})
            except VoiceError as e:
                out.append({"name": p.name[:-len(SUFFIX)], "error": str(e), "path": str(p)})
        return out

    def remove(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            raise VoiceError(f"no voice named {name!r} in {self.directory}") from None

    def resolve(self, name_or_path, bundle) -> Voice:
        """A stored name, a `.safetensors` path or a `Voice`, checked against `bundle` (family and hash)."""
        if isinstance(name_or_path, Voice):
            return check_compatible(name_or_path, bundle)
        s = os.fspath(name_or_path)
        if s.endswith(SUFFIX) or os.sep in s or "/" in s:
            return check_compatible(Voice.load(s), bundle, s)
        return check_compatible(self.get(s), bundle, str(self.path(s)))


__all__ = ["VoiceStore", "check_compatible"]
