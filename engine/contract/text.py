"""Text: checking and splitting it, and the reference family's byte tokens.

Shared by the PyTorch reference (`cadenza.export`) and the runtime, so both
build exactly the same prompt. Pure Python: no download, no torch.

The reference family's prompt for one segment: `[VOICE, BOS, b_0 .. b_{n-1}, EOT]`,
where `b_i` are the UTF-8 bytes of the text and `VOICE` is the slot the speaker
embedding is projected into (other families: `prompt.py`).
"""
from __future__ import annotations

import re

from ..errors import TextError

N_BYTES = 256
BOS, EOT, PAD, VOICE = 256, 257, 258, 259
N_TEXT_TOKENS = 260
SPECIAL_TOKENS = {"bos": BOS, "eot": EOT, "pad": PAD, "voice": VOICE}

def encode(text: str) -> list[int]:
    """UTF-8 bytes of `text` (no specials)."""
    return list(text.encode("utf-8"))


def prompt_tokens(text: str, with_voice: bool = True) -> list[int]:
    """The full prompt of one segment: voice slot, BOS, bytes, EOT."""
    ids = [BOS, *encode(text), EOT]
    return [VOICE, *ids] if with_voice else ids


def check_text(text: str) -> str:
    """Normalise whitespace; raise `TextError` for empty or whitespace-only text."""
    if not isinstance(text, str):
        raise TextError(f"text must be str, got {type(text).__name__}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise TextError("text is empty or whitespace only; give at least one word to speak")
    return cleaned


_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")
_CLAUSE = re.compile(r"(?<=[,\u2014\u2013-])\s+")


def split_text(text: str, max_bytes: int) -> list[str]:
    """Split `text` into segments of at most `max_bytes` UTF-8 bytes each.

    Splits at sentence ends first, then clause marks, then spaces, and packs
    neighbouring pieces back together while they fit. Raises `TextError` only
    for a single unbreakable piece (no space inside) longer than `max_bytes`.

    Example:
        >>> split_text("One. Two, three.", 8)
        ['One.', 'Two,', 'three.']
    """
    text = check_text(text)
    if len(text.encode("utf-8")) <= max_bytes:
        return [text]
    pieces: list[str] = []
    for sentence in _SENTENCE.split(text):
        pieces.extend(_split_piece(sentence, max_bytes))
    return _pack(pieces, max_bytes)


def _split_piece(piece: str, max_bytes: int) -> list[str]:
    if len(piece.encode("utf-8")) <= max_bytes:
        return [piece]
    for pattern in (_CLAUSE, re.compile(r"\s+")):
        parts = [p for p in pattern.split(piece) if p]
        if len(parts) > 1:
            return [q for p in parts for q in _split_piece(p, max_bytes)]
    raise TextError(
        f"a piece of {len(piece.encode('utf-8'))} bytes with no space to split at ({piece[:40]!r}...) "
        f"exceeds the {max_bytes}-byte prompt limit; raise the engine's max_len or break the text"
    )


def _pack(pieces: list[str], max_bytes: int) -> list[str]:
    out: list[str] = []
    for p in pieces:
        if out and len((out[-1] + " " + p).encode("utf-8")) <= max_bytes:
            out[-1] = out[-1] + " " + p
        else:
            out.append(p)
    return out
