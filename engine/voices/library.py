"""Making voices: the bundle's encoder graphs, and the engine-side library (`engine.voices`).

`VoiceEncoder` runs `speaker_encode` (and `codec_encode` for an acoustic prompt)
on ONNX Runtime whatever the generation backend; `VoiceLibrary` turns a sample
into a stored `Voice` and resolves names for the engine, keeping each stored
voice in memory until its file changes.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..errors import VoiceError
from .audio import load_audio, prepare_pcm
from .store import VoiceStore, check_compatible
from .voice import MAX_PROMPT_SECONDS, Voice, check_name


class VoiceEncoder:
    """The bundle's `speaker_encode` and `codec_encode` graphs, opened on first use. Thread-safe.

    The graphs run with one intra-op thread (the same sample always gives a
    bit-identical embedding, and generation keeps its cores); a lock serialises
    runs because a graph's output buffers are shared.
    """

    def __init__(self, bundle):
        self.bundle = bundle
        self.sample_rate, self.hop = bundle.constants.sample_rate, bundle.constants.hop
        self._graphs: dict = {}
        self._lock = threading.Lock()

    def run(self, role: str, pcm: np.ndarray) -> np.ndarray:
        """pcm float32 [N] -> the role's single output for batch 1, copied (the graph owns its buffers)."""
        from ..backends.ort.graph import OrtGraph

        x = np.ascontiguousarray(pcm, np.float32).reshape(1, -1)  # [1, N]
        with self._lock:
            g = self._graphs.get(role)
            if g is None:
                g = self._graphs[role] = OrtGraph(self.bundle, role, {"batch": 1, "samples": x.shape[1]}, 1)
            out = g.run({g.input_names[0]: x})
            return out[g.output_names[0]][0].copy()

    def embedding(self, pcm: np.ndarray) -> np.ndarray:
        """float32 [E]."""
        e = self.run("speaker_encode", pcm)
        if not np.isfinite(e).all():
            raise VoiceError("the speaker encoder returned non-finite values; check the bundle and the sample")
        return e.astype(np.float32, copy=False)

    def prompt_codes(self, pcm: np.ndarray, max_seconds: float = MAX_PROMPT_SECONDS) -> np.ndarray:
        """int64 [K, F]: the codec frames of the first `max_seconds` (whole frames only)."""
        n = min(len(pcm), int(max_seconds * self.sample_rate)) // self.hop * self.hop
        if n == 0:
            raise VoiceError(f"the sample is shorter than one codec frame ({self.hop} samples)")
        return self.run("codec_encode", pcm[:n]).astype(np.int64, copy=False)

    def close(self) -> None:
        with self._lock:
            for g in self._graphs.values():
                g.close()
            self._graphs.clear()


def _cadenza_version() -> str:
    try:
        from importlib.metadata import version

        return version("cadenza-tts")
    except Exception:  # running from a source tree that was never installed
        return "unknown"


def source_meta(info) -> dict:
    """The provenance `Voice.meta` keeps of an `AudioInfo` (no file path: only its hash)."""
    return {"source_sha256": info.sha256, "duration_s": round(info.seconds, 3),
            "source_sample_rate": info.sample_rate, "source_channels": info.channels,
            "source_format": info.format}


def encode_voice(engine, pcm: np.ndarray, name: str, with_prompt: bool = False, transcript: str | None = None,
                 source_meta: dict | None = None) -> Voice:
    """Encode a prepared sample (float32 mono at the bundle rate, e.g. from `load_audio`) into a `Voice`.

    Args:
        engine: an `Engine`, a `VoiceLibrary` or a `VoiceEncoder` (whose graphs run the encoders).
        with_prompt: also keep the sample's codec frames (at most 10 s) as `prompt_codes`.
        transcript: what the sample says (used with the prompt codes).
        source_meta: provenance merged into `meta` (see `source_meta(info)`).
    """
    enc = engine if isinstance(engine, VoiceEncoder) else getattr(engine, "encoder", None) or engine.voices.encoder
    check_name(name)
    if transcript is not None and (not isinstance(transcript, str) or not transcript.strip()):
        raise VoiceError("the transcript must be non-empty text (or omitted)")
    context_only = not enc.bundle.has("speaker_encode")  # CSM: a voice is a context segment
    if context_only and not (transcript and enc.bundle.has("codec_encode")):
        raise VoiceError(f"a {enc.bundle.family} voice is a sample with its transcript (a context segment); "
                         "pass transcript=... (`cadenza voice add SAMPLE --transcript TEXT`)")
    emb = np.zeros(0, np.float32) if context_only else enc.embedding(pcm)
    codes = enc.prompt_codes(pcm) if with_prompt or context_only else None
    meta = {"duration_s": round(len(pcm) / enc.sample_rate, 3), **(source_meta or {}),
            "family": enc.bundle.manifest.get("family"), "bundle_hash": enc.bundle.hash,
            "sample_rate": enc.sample_rate, "prompt_frames": 0 if codes is None else int(codes.shape[1]),
            **({"speaker": enc.bundle.prompt.default_voice} if enc.bundle.prompt.voice_kind == "speaker" else {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cadenza_version": _cadenza_version()}
    return Voice(name, emb, codes, transcript.strip() if transcript else None, meta)


class VoiceLibrary:
    """`engine.voices`: add voices from samples, and list, get, remove and resolve stored ones.

    Args:
        bundle: the bundle whose encoders make (and whose hash must match) the voices.
        store: a `VoiceStore`, a directory, or None for the default store.
    """

    def __init__(self, bundle, store: VoiceStore | str | Path | None = None):
        self.bundle = bundle
        self.encoder = VoiceEncoder(bundle)
        self.store = store if isinstance(store, VoiceStore) else VoiceStore(store)
        self._cache: dict[str, tuple[tuple, Voice]] = {}  # name -> (file signature, checked voice)
        self._lock = threading.Lock()

    def add(self, sample, name: str, with_prompt: bool = False, transcript: str | None = None, *,
            replace: bool = False, sample_rate: int | None = None, max_seconds: float | None = None) -> Voice:
        """Encode `sample` (a path, a binary file, or an array at `sample_rate`) and store it as `name`.

        Raises VoiceError for a bad sample, a bad name, or an existing name without replace=True.
        """
        check_name(name)
        kw = {} if max_seconds is None else {"max_seconds": max_seconds}
        if isinstance(sample, np.ndarray):
            pcm, info = prepare_pcm(sample, sample_rate or self.encoder.sample_rate, self.encoder.sample_rate,
                                    label=f"sample for {name!r}", **kw)
        else:
            pcm, info = load_audio(sample, self.encoder.sample_rate, **kw)
        voice = encode_voice(self.encoder, pcm, name, with_prompt, transcript, source_meta(info))
        self.store.add(voice, replace=replace)
        return voice

    def get(self, name: str) -> Voice:
        return self.store.get(name)

    @property
    def builtin(self) -> list[str]:
        """The family's own voices (Orpheus: names such as `tara`; CSM: speaker ids, any of which
        works; the reference family: none)."""
        return list(self.bundle.prompt.builtin_voices)

    def builtin_prompt(self, voice):
        """A `VoicePrompt` naming a built-in voice, or None when `voice` is not one."""
        from ..runtime.request import VoicePrompt

        kind = self.bundle.prompt.voice_kind
        if kind == "speaker" and (isinstance(voice, int) and not isinstance(voice, bool)
                                  or isinstance(voice, str) and voice.isdigit()):
            return VoicePrompt(name=self.bundle.prompt.check_voice(str(voice)))
        if kind == "name" and isinstance(voice, str) and voice in self.bundle.prompt.builtin_voices:
            return VoicePrompt(name=voice)
        return None

    def list(self) -> list[dict]:
        return self.store.list()

    def remove(self, name: str) -> None:
        self.store.remove(name)

    def resolve(self, voice) -> Voice:
        """A stored voice's name (a `str` is a name, never a path), a `pathlib.Path` to a voice file, or a
        `Voice`, checked against this bundle.

        A stored voice is read and checked once and kept until its file changes (size, mtime
        or inode), so a stream with a stored voice does not re-read it before its first audio.
        """
        if not isinstance(voice, str):
            return self.store.resolve(voice, self.bundle)
        path = self.store.path(voice)
        try:
            st = path.stat()
        except FileNotFoundError:
            return self.store.resolve(voice, self.bundle)  # the store's own "no voice named" error
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            hit = self._cache.get(voice)
            if hit is not None and hit[0] == sig:
                return hit[1]
        v = check_compatible(Voice.load(path, follow_links=False, expect_name=voice), self.bundle, str(path))
        with self._lock:
            self._cache[voice] = (sig, v)
        return v

    def close(self) -> None:
        self.encoder.close()


__all__ = ["VoiceLibrary", "VoiceEncoder", "encode_voice", "source_meta"]
