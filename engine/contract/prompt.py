"""Prompts: a family's tokenizer and prompt template, read from the manifest's `prompt` block.

A template is a list of pieces: fixed vocabulary ids, or text formatted with
`{text}` (and `{voice}` where the family names its voice in the prompt). The
tokenizer turns text pieces into ids: UTF-8 bytes for the reference family, or
the checkpoint's own `tokenizer.json` run by the `tokenizers` library (no
PyTorch, no special tokens added: the template holds them).

    orpheus: [128259, 128000] + tok("{voice}: {text}") + [128009, 128260, 128261, 128257]
    csm:     [128000] + tok("[{voice}]{text}") + [128001]
    cadenza: [BOS] + utf-8 bytes of text + [EOT]   (after the VOICE slot of the voice prefix)
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BundleError, VoiceError
from . import text as byte_text


class ByteTokenizer:
    """The reference family's tokenizer: the UTF-8 bytes of the text."""

    def encode(self, s: str) -> list[int]:
        return byte_text.encode(s)


class FileTokenizer:
    """A checkpoint's `tokenizer.json` (its verified bytes), run by `tokenizers` without special tokens."""

    def __init__(self, data: bytes):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # a base dependency; only a broken install lacks it
            raise BundleError(f"this bundle needs the `tokenizers` library ({e}); pip install tokenizers") from None
        try:
            self._tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - the library raises a bare Exception on a bad file
            raise BundleError(f"the bundle's tokenizer.json is not a file the `tokenizers` library reads "
                              f"({str(e)[:120]}); re-export the bundle") from None

    def encode(self, s: str) -> list[int]:
        return self._tok.encode(s, add_special_tokens=False).ids


@dataclass(frozen=True)
class PromptTemplate:
    """A family's prompt: pieces, how a voice enters it, and its built-in voices.

    voice_kind: "embedding" (the reference family: a speaker embedding fills the VOICE slot
        of the voice prefix), "name" (Orpheus: the voice's name is text in the prompt) or
        "speaker" (CSM: an integer speaker id is text in the prompt).
    """

    pieces: tuple  # ("ids", (...)) | ("text", "format with {text} / {voice}", "format without a voice")
    voice_kind: str
    builtin_voices: tuple[str, ...] = ()
    default_voice: str | None = None

    def tokens(self, tokenizer, text: str, voice: str | None) -> list[int]:
        """The prompt of one text segment spoken by `voice` (None: the default voice)."""
        voice = self.default_voice if voice is None else voice
        out: list[int] = []
        for piece in self.pieces:
            if piece[0] == "ids":
                out += list(piece[1])
            else:
                fmt = piece[1] if voice is not None else piece[2]
                out += tokenizer.encode(fmt.format(text=text, voice=voice))
        return out

    def check_voice(self, name: str) -> str:
        """A built-in voice name (or, for `speaker`, any speaker id); VoiceError otherwise."""
        if self.voice_kind == "speaker":
            if isinstance(name, bool) or not str(name).isdigit():
                raise VoiceError(f"this model takes a speaker id (a non-negative int) as its voice, got {name!r}")
            return str(int(name))
        if name in self.builtin_voices:
            return name
        raise VoiceError(f"{name!r} is not one of this model's voices ({', '.join(self.builtin_voices) or 'none'}) "
                         "nor a stored voice; `engine.voices.builtin` lists them, `engine.voices.list()` the stored ones")

    def to_dict(self) -> dict:
        return {"pieces": [list(p) if p[0] == "text" else ["ids", list(p[1])] for p in self.pieces],
                "voice_kind": self.voice_kind, "builtin_voices": list(self.builtin_voices),
                "default_voice": self.default_voice}

    @classmethod
    def from_dict(cls, d: dict, where: str = "the manifest") -> "PromptTemplate":
        try:
            pieces = tuple(("ids", tuple(int(i) for i in p[1])) if p[0] == "ids" else ("text", str(p[1]), str(p[2]))
                           for p in d["pieces"])
            t = cls(pieces, str(d["voice_kind"]), tuple(str(v) for v in d.get("builtin_voices", ())),
                    d.get("default_voice"))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise BundleError(f"{where}: the prompt block is malformed ({e!r}); rebuild the bundle") from None
        if t.voice_kind not in ("embedding", "name", "speaker"):
            raise BundleError(f"{where}: unknown prompt voice_kind {t.voice_kind!r}; rebuild the bundle")
        return t


def reference_template() -> PromptTemplate:
    """`[BOS] + bytes + [EOT]`; the voice is the VOICE slot of the prefix, filled by an embedding."""
    return PromptTemplate((("ids", (byte_text.BOS,)), ("text", "{text}", "{text}"), ("ids", (byte_text.EOT,))),
                          "embedding")
