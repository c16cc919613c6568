"""Byte-level BPE tokenizers with Llama-3 / Orpheus special tokens at their real ids.

The tokenizers hold only the 256 byte symbols as regular vocabulary (ids 0..255, id == byte
value), no merges, and put every special token at the id the real checkpoints use, through
`added_tokens` entries with explicit ids. Text therefore tokenizes to one id per UTF-8 byte,
which is enough for tests that need real special-token ids and a real `tokenizer.json`.

Depends only on `tokenizers` and `transformers`; used by `random_checkpoints.py`.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
EOT = "<|eot_id|>"
LLAMA3_TEXT_VOCAB = 128256
LLAMA3_FIRST_SPECIAL = 128000

# Llama-3.x named specials (the others in 128000..128255 are <|reserved_special_token_N|>).
LLAMA3_NAMED_SPECIALS = {
    128000: BEGIN_OF_TEXT,
    128001: END_OF_TEXT,
    128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: EOT,
    128010: "<|python_tag|>",
}

# CSM (sesame/csm-1b) renames two reserved slots.
CSM_SPECIALS = {128002: "<|AUDIO|>", 128003: "<|audio_eos|>"}


def byte_symbols() -> list[str]:
    """GPT-2 style printable symbol for every byte value.

    Returns:
        list of 256 one-character strings; entry b is the symbol of byte b.
    """
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    symbols = {}
    extra = 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def llama3_specials(overrides: dict[int, str] | None = None) -> dict[int, str]:
    """All 256 Llama-3 special tokens (ids 128000..128255) with optional renames.

    Args:
        overrides: id -> content replacing the default name at that id.

    Returns:
        dict id -> token content.
    """
    specials = {}
    reserved = 0
    for tid in range(LLAMA3_FIRST_SPECIAL, LLAMA3_TEXT_VOCAB):
        if tid in LLAMA3_NAMED_SPECIALS:
            specials[tid] = LLAMA3_NAMED_SPECIALS[tid]
        else:
            specials[tid] = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
    specials.update(overrides or {})
    return specials


def _base_tokenizer(specials: dict[int, str]) -> Tokenizer:
    """Byte-level BPE over the 256 byte symbols (+ specials) with a BOS post-processor.

    The specials are also placed in the BPE vocabulary at their ids: `tokenizers` renumbers
    added tokens that the model vocabulary does not know to follow its last id, so this is what
    pins them to the real (non-contiguous) ids.
    """
    vocab = {sym: i for i, sym in enumerate(byte_symbols())}
    vocab.update({text: tid for tid, text in specials.items()})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT} $A",
        pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT} $B",
        special_tokens=[(BEGIN_OF_TEXT, LLAMA3_FIRST_SPECIAL)],
    )
    return tok


def build_tokenizer(specials: dict[int, str]) -> Tokenizer:
    """Byte-level tokenizer whose added special tokens sit at the given ids.

    Args:
        specials: id -> content for every special token (ids may leave gaps).

    Returns:
        a `tokenizers.Tokenizer`.
    """
    spec = json.loads(_base_tokenizer(specials).to_str())
    spec["added_tokens"] = [
        {"id": tid, "content": text, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
        for tid, text in sorted(specials.items())
    ]
    return Tokenizer.from_str(json.dumps(spec))


def wrap_fast(tok: Tokenizer, eos: str, pad: str) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` for `save_pretrained`/`AutoTokenizer` round trips.

    Args:
        tok: the raw tokenizer.
        eos: content of the end-of-sequence token.
        pad: content of the padding token.

    Returns:
        a `PreTrainedTokenizerFast`.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BEGIN_OF_TEXT, eos_token=eos, pad_token=pad,
        model_max_length=131072,
    )


def orpheus_tokenizer(vocab_size: int = 156940) -> PreTrainedTokenizerFast:
    """Orpheus tokenizer: Llama-3 specials + `<custom_token_N>` at id 128256 + N.

    Args:
        vocab_size: model vocabulary; custom tokens fill 128256..vocab_size-1.

    Returns:
        a `PreTrainedTokenizerFast` (pad = <custom_token_7> = 128263, eos = <|eot_id|>).
    """
    specials = llama3_specials()
    for tid in range(LLAMA3_TEXT_VOCAB, vocab_size):
        specials[tid] = f"<custom_token_{tid - LLAMA3_TEXT_VOCAB}>"
    return wrap_fast(build_tokenizer(specials), eos=EOT, pad="<custom_token_7>")


def csm_tokenizer() -> PreTrainedTokenizerFast:
    """CSM tokenizer: Llama-3 specials with <|AUDIO|>=128002, <|audio_eos|>=128003.

    Returns:
        a `PreTrainedTokenizerFast` (text vocab 128256; eos = <|end_of_text|>, pad = <|AUDIO|>).
    """
    tok = build_tokenizer(llama3_specials(CSM_SPECIALS))
    return wrap_fast(tok, eos=END_OF_TEXT, pad="<|AUDIO|>")
