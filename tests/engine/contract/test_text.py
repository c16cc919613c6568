"""The byte tokenizer, text checks, segment splitting and the frame-length policy."""
from __future__ import annotations

import pytest

from cadenza.engine.contract import text as tok
from cadenza.engine.contract.text import TextError, check_text, prompt_tokens, split_text


# --- tokenizer ----------------------------------------------------------------
def test_special_tokens_are_distinct_and_outside_bytes():
    ids = [tok.BOS, tok.EOT, tok.PAD, tok.VOICE]
    assert len(set(ids)) == 4
    assert all(tok.N_BYTES <= i < tok.N_TEXT_TOKENS for i in ids)
    assert tok.SPECIAL_TOKENS == {"bos": tok.BOS, "eot": tok.EOT, "pad": tok.PAD, "voice": tok.VOICE}


def test_prompt_layout():
    assert prompt_tokens("Hi") == [tok.VOICE, tok.BOS, ord("H"), ord("i"), tok.EOT]
    assert prompt_tokens("Hi", with_voice=False) == [tok.BOS, 72, 105, tok.EOT]


@pytest.mark.parametrize("text,expected", [
    pytest.param("é", [0xC3, 0xA9], id="2_byte"),
    pytest.param("€", [0xE2, 0x82, 0xAC], id="3_byte"),
    pytest.param("🎵", [0xF0, 0x9F, 0x8E, 0xB5], id="4_byte"),
    pytest.param("aé€🎵", [0x61, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x8E, 0xB5], id="mixed"),
])
def test_utf8_multibyte(text, expected):
    assert tok.encode(text) == expected
    assert prompt_tokens(text) == [tok.VOICE, tok.BOS, *expected, tok.EOT]
    assert bytes(tok.encode(text)).decode("utf-8") == text


# --- check_text ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    pytest.param("", id="empty"), pytest.param("   ", id="spaces"), pytest.param("\n\t \r\n", id="whitespace"),
    pytest.param("\u00a0\u3000", id="unicode_spaces"),
])
def test_check_text_rejects_empty(bad):
    with pytest.raises(TextError):
        check_text(bad)


@pytest.mark.parametrize("bad", [None, b"bytes", 42, ["a list"]], ids=["none", "bytes", "int", "list"])
def test_check_text_rejects_non_str(bad):
    with pytest.raises(TextError, match="str"):
        check_text(bad)


def test_check_text_normalises_whitespace():
    assert check_text("  Hello,\n\tworld.  ") == "Hello, world."
    assert issubclass(TextError, ValueError)


# --- split_text ------------------------------------------------------------------
LONG = ("The quick brown fox jumps over the lazy dog. It was not amused, not at all; the dog "
        "simply went back to sleep! Then, after a while — perhaps an hour — the fox returned? "
        "Zoë, the café owner, watched everything from the window: über-calm, as always.")


@pytest.mark.parametrize("max_bytes", [12, 20, 33, 64, 100, 1000])
@pytest.mark.parametrize("text", [pytest.param(LONG, id="long"),
                                  pytest.param("  many   spaces\n\nand\tlines.  Here ", id="messy_ws"),
                                  pytest.param("aaaa bbbb cccc dddd eeee", id="words")])
def test_split_text_invariants(text, max_bytes):
    segments = split_text(text, max_bytes)
    assert segments and all(s for s in segments)
    assert all(len(s.encode("utf-8")) <= max_bytes for s in segments), segments
    assert all(s == s.strip() for s in segments)
    assert " ".join(segments) == check_text(text)  # order and content kept


def test_split_text_fits_in_one():
    assert split_text("  Short  text. ", 100) == ["Short text."]


@pytest.mark.parametrize("text,max_bytes,expected", [
    pytest.param("One. Two, three.", 8, ["One.", "Two,", "three."], id="docstring"),
    # sentence ends first: a greedy word packer would give ['Hi. Hello there', 'friend.']
    pytest.param("Hi. Hello there friend.", 20, ["Hi.", "Hello there friend."], id="sentence_first"),
    pytest.param("Yes! No? Maybe; ok: fine.", 9, ["Yes! No?", "Maybe;", "ok: fine."], id="sentence_marks"),
    # then clause marks: a word packer would give ['Hi, hello there', 'friend']
    pytest.param("Hi, hello there friend", 20, ["Hi,", "hello there friend"], id="clause_before_space"),
    pytest.param("wait \u2014 what", 8, ["wait \u2014", "what"], id="em_dash_clause"),
    # then spaces
    pytest.param("aaa bbb ccc ddd", 8, ["aaa bbb", "ccc ddd"], id="space"),
    # bytes, not characters: 'éééé' is 8 bytes
    pytest.param("éééé ééé", 8, ["éééé", "ééé"], id="utf8_bytes"),
])
def test_split_text_break_points(text, max_bytes, expected):
    segments = split_text(text, max_bytes)
    assert segments == expected
    assert all(len(s.encode("utf-8")) <= max_bytes for s in segments)
    assert " ".join(segments) == check_text(text)


@pytest.mark.parametrize("text,max_bytes", [
    pytest.param("a" * 30, 10, id="one_long_word"),
    pytest.param("ok fine " + "x" * 20 + " end", 10, id="long_word_inside"),
    pytest.param("é" * 6, 10, id="multibyte_word"),  # 6 characters, 12 bytes
])
def test_split_text_unbreakable_piece(text, max_bytes):
    with pytest.raises(TextError, match=f"{max_bytes}-byte"):
        split_text(text, max_bytes)


def test_split_text_rejects_empty():
    with pytest.raises(TextError):
        split_text(" \n ", 100)
