"""The voice store: a directory of `NAME.safetensors` voice files, and the bundle check.

Example:
    >>> store = VoiceStore("voices/")
    >>> voice = store.resolve("me", bundle)  # VoiceError if it was made with another bundle
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import VoiceError
from .voice import ADD_HINT, MAX_PROMPT_SECONDS, SUFFIX, Voice, check_name


def check_compatible(voice: Voice, bundle, source: str = "") -> Voice:
    """VoiceError unless `voice` was made with this bundle (same model family and bundle hash)."""
    fam, want = bundle.manifest.get("family"), bundle.hash
    where = f" ({source})" if source else ""
    if voice.meta.get("family") != fam or voice.bundle_hash != want:
        raise VoiceError(f"voice {voice.name!r}{where} was made with {voice.meta.get('family')!r} bundle "
                         f"{str(voice.bundle_hash)[:12]}, not this {fam!r} bundle {want[:12]} ({bundle.path}); "
                         f"re-add the voice with this bundle: `cadenza voice add SAMPLE.wav --name {voice.name} "
                         f"--bundle {bundle.path} --replace`")
    c = bundle.constants
    if voice.embedding.shape != (c.speaker_dim,):
        raise VoiceError(f"voice {voice.name!r}{where} has a {voice.embedding.shape} embedding; this bundle "
                         f"needs {c.speaker_dim}; {ADD_HINT}")
    codes = voice.prompt_codes
    if codes is not None:
        most = int(MAX_PROMPT_SECONDS * c.frame_rate) + 1
        if codes.shape[0] != c.n_codebooks or codes.shape[1] > most or codes.max() >= c.codebook_size:
            raise VoiceError(f"voice {voice.name!r}{where}: its prompt codes {codes.shape} (max {codes.max()}) do "
                             f"not fit this bundle ({c.n_codebooks} codebooks of {c.codebook_size} codes, at most "
                             f"{most} frames); {ADD_HINT}")
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
        """The stored voice `name` (a regular file of the store, never through a link, named as its file)."""
        p = self.path(name)
        if not p.is_file():
            raise VoiceError(f"no voice named {name!r} in {self.directory}; `cadenza voice list --store "
                             f"{self.directory}` shows the voices, `cadenza voice add` adds one")
        return Voice.load(p, follow_links=False, expect_name=name)

    def list(self) -> list[dict]:
        """One dict per stored voice, sorted by name: name, duration_s, bundle_hash, created, prompt, path
        (and `error` instead of the details for an unreadable file)."""
        out = []
        for p in sorted(self.directory.glob(f"*{SUFFIX}")) if self.directory.is_dir() else []:
            if p.name.startswith("."):
                continue
            try:
                v = Voice.load(p, follow_links=False, expect_name=p.name[:-len(SUFFIX)])
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

    def resolve(self, voice, bundle) -> Voice:
        """A stored voice's name (a `str` is always a name, never a path), a voice file given as a
        `pathlib.Path`, or a `Voice`; checked against `bundle` (family, hash, shapes, code ranges)."""
        if isinstance(voice, Voice):
            return check_compatible(voice, bundle)
        if isinstance(voice, os.PathLike):
            return check_compatible(Voice.load(Path(voice)), bundle, os.fspath(voice))
        if isinstance(voice, str):
            return check_compatible(self.get(voice), bundle, str(self.path(voice)))
        raise VoiceError(f"a voice is a stored voice's name, a pathlib.Path to a voice file or a Voice, "
                         f"got {type(voice).__name__}")


__all__ = ["VoiceStore", "check_compatible"]
