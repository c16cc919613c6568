"""Orpheus through Cadenza against the family's own code: greedy codes equal a masked greedy loop
over transformers' LlamaForCausalLM forward, PCM equals snac's decode (noise off), tokens equal the
checkpoint's tokenizer, and bad checkpoints are typed errors naming the fix."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cadenza.export.families import orpheus as fam

TEXTS = ["Hello there.", "Zoë says: ça va? Fine, thanks!", "日本語のテキスト、こんにちは。"]


def hf_prompt(tokenizer, text: str, voice: str | None) -> list[int]:
    """Orpheus' own prompt format, with the checkpoint's own tokenizer."""
    body = f"{voice}: {text}" if voice else text
    ids = tokenizer(body, add_special_tokens=False).input_ids
    return [fam.START_OF_HUMAN, fam.BOS, *ids, fam.EOT_ID, fam.END_OF_HUMAN, fam.START_OF_AI, fam.START_OF_SPEECH]


@torch.no_grad()
def hf_greedy(model, prompt: list[int], frames: int) -> np.ndarray:
    """A masked greedy loop over the family's forward: token j of a frame among its 4096 ids, the
    stop id refused (forced length). Returns codes [7, frames]."""
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    codes = []
    for t in range(frames * 7):
        j = t % 7
        lo = fam.AUDIO_BASE + j * fam.CODEBOOK
        logits = out.logits[0, -1]
        code = int(logits[lo:lo + fam.CODEBOOK].argmax())
        codes.append(code)
        out = model(input_ids=torch.tensor([[lo + code]]), past_key_values=out.past_key_values, use_cache=True)
    return np.array(codes).reshape(frames, 7).T


@pytest.fixture(scope="module")
def tokenizer(orpheus_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(orpheus_dir)


@pytest.fixture(scope="module")
def engine(orpheus_bundle):
    from cadenza.engine import Engine

    with Engine.load(orpheus_bundle, threads=1, max_streams=3) as e:
        yield e


def test_tokenization_equals_the_checkpoints_tokenizer(orpheus_bundle, tokenizer):
    from cadenza.engine.contract.bundle import Bundle

    b = Bundle.load(orpheus_bundle)
    for text in [*TEXTS, "tara: <laugh> well, that's it!"]:
        assert b.tokenizer.encode(text) == tokenizer(text, add_special_tokens=False).input_ids
        for voice in (None, "tara"):
            assert b.prompt.tokens(b.tokenizer, text, voice) == hf_prompt(tokenizer, text, voice)


@pytest.mark.parametrize("text,voice", [(TEXTS[0], "tara"), (TEXTS[1], "leo"), (TEXTS[2], None)])
def test_greedy_codes_equal_the_familys_own_loop(engine, orpheus_hf, tokenizer, text, voice):
    want = hf_greedy(orpheus_hf, hf_prompt(tokenizer, text, voice), 6)
    got = engine.synthesize(text, voice=voice, greedy=True, frames=6).codes
    assert got.shape == (7, 6)
    np.testing.assert_array_equal(got, want)


def test_mixed_batch_gives_each_stream_its_own_codes(engine, orpheus_hf, tokenizer):
    """Three streams at once (one batch, different prompt lengths): each equals the family's loop alone."""
    streams = [engine.stream(t, voice=v, greedy=True, frames=5) for t, v in zip(TEXTS, ("tara", "zoe", None))]
    for s in streams:
        s.read_all()
    for s, t, v in zip(streams, TEXTS, ("tara", "zoe", None)):
        np.testing.assert_array_equal(s.codes, hf_greedy(orpheus_hf, hf_prompt(tokenizer, t, v), 5))


def test_pcm_equals_snac_and_streams_exactly(engine, snac_ref):
    from cadenza.export.families.snac import split_levels

    s = engine.stream("A longer sentence, to stream in several chunks.", voice="tara", seed=3, frames=14)
    chunks = list(s)
    pcm = np.concatenate([c.pcm for c in chunks])
    assert len(chunks) > 2 and [c.frames for c in chunks][-1][1] == 14
    with torch.no_grad():
        want = snac_ref.decode(split_levels(torch.as_tensor(s.codes)[None])).squeeze().numpy()
    peak = np.abs(want).max()
    assert len(pcm) == 14 * 2048 and peak > 0.05
    assert np.abs(pcm - want).max() <= 1e-4 * peak  # streamed windows (3 left, 3 right) == one offline decode
    np.testing.assert_allclose(engine.decode(s.codes), want, atol=1e-4 * peak)


def test_sampled_streams_are_seeded_and_stay_in_range(engine):
    a = engine.synthesize(TEXTS[0], voice="tara", seed=7, frames=8)
    b = engine.synthesize(TEXTS[0], voice="tara", seed=7, frames=8)
    c = engine.synthesize(TEXTS[0], voice="tara", seed=8, frames=8)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert not np.array_equal(a.codes, c.codes)
    assert a.codes.min() >= 0 and a.codes.max() < 4096


def test_manifest_records_the_token_map(orpheus_bundle):
    m = json.loads((orpheus_bundle / "manifest.json").read_text())
    assert m["family"] == "orpheus" and m["layout"]["kind"] == "flat"
    assert m["layout"]["logits_offset"] == 128256 and m["layout"]["stop_columns"] == [2]
    assert m["layout"]["allowed"][0] == [10, 10 + 4096] and m["layout"]["allowed"][6][1] == 10 + 7 * 4096
    assert m["layout"]["logits_size"] == 156940 - 128256  # the head keeps only the ids that can be sampled
    assert m["codec"] == {"kind": "window", "left": 3, "right": 3}
    assert m["sampling"] == {"temperature": 0.6, "top_k": 0, "top_p": 0.8, "repetition_penalty": 1.3}
    assert "tokenizer.json" in m["files"] and m["constants"]["hop"] == 2048


def test_the_head_is_cut_per_frame_position(orpheus_bundle, orpheus_hf):
    """The backbone returns the hidden state only; graph head.{j} holds exactly the head rows position j
    may sample (4,096 codes; at j == 0 also the stop id), equal to the checkpoint's lm_head rows."""
    import onnx
    from onnx import numpy_helper

    m = json.loads((orpheus_bundle / "manifest.json").read_text())
    assert [t["name"] for t in m["graphs"]["backbone"]["outputs"] if not t["name"].startswith("present")] == ["hidden"]
    heads = m["layout"]["heads"]
    assert heads[0] == [2, 10 + 4096] and heads[3] == [10 + 3 * 4096, 10 + 4 * 4096] and len(heads) == 7
    lm = orpheus_hf.lm_head.weight.detach().numpy()
    for j, (lo, hi) in enumerate(heads):
        g = onnx.load(str(orpheus_bundle / f"head.{j}.onnx"))
        (w,) = [numpy_helper.to_array(t) for t in g.graph.initializer if t.name.endswith("weight_t")]
        np.testing.assert_array_equal(w.T, lm[128256 + lo:128256 + hi])


def test_unknown_voice_names_the_builtin_ones(engine):
    from cadenza.engine import VoiceError

    with pytest.raises(VoiceError, match="tara"):
        engine.stream("Hi.", voice="nobody-here")


# --- bad checkpoints ---------------------------------------------------------------------------
def _export(tmp_path, ckpt, codec):
    from cadenza.export.families import export_family

    return export_family("orpheus", str(ckpt), tmp_path / "out", str(codec))


def test_missing_tokenizer(tmp_path, orpheus_dir, snac_dir):
    from cadenza.export.families.checkpoint import CheckpointError

    d = shutil.copytree(orpheus_dir, tmp_path / "ckpt")
    (d / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        _export(tmp_path, d, snac_dir)


def test_another_architecture(tmp_path, orpheus_dir, snac_dir, edited_copy):
    from cadenza.export.families.checkpoint import CheckpointError

    d = edited_copy(orpheus_dir, "ckpt", architectures=["GPT2LMHeadModel"])
    with pytest.raises(CheckpointError, match="LlamaForCausalLM"):
        _export(tmp_path, d, snac_dir)


def test_vocabulary_too_small_for_the_token_map(tmp_path, orpheus_dir, snac_dir, edited_copy):
    from cadenza.export.families.checkpoint import CheckpointError

    d = edited_copy(orpheus_dir, "ckpt", vocab_size=128256)
    with pytest.raises(CheckpointError, match="too small"):
        _export(tmp_path, d, snac_dir)


def test_a_codec_that_does_not_fit(tmp_path, orpheus_dir, snac_dir, edited_copy):
    from cadenza.export.families.checkpoint import CheckpointError

    d = edited_copy(snac_dir, "codec", sampling_rate=32000)
    with pytest.raises(CheckpointError, match="snac_24khz"):
        _export(tmp_path, orpheus_dir, d)


def test_unreachable_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    from cadenza.export.families.checkpoint import CheckpointError, resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="download it where the hub is reachable"):
        resolve("canopylabs/orpheus-3b-0.1-ft", "the Orpheus checkpoint")
