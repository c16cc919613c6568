"""CSM through Cadenza against the family's own code: greedy codes equal a masked greedy loop over
transformers' CsmForConditionalGeneration (backbone, lm_head, depth decoder), PCM equals Mimi's
decode, a voice made from a sample and its transcript is a context segment the family's loop
agrees with, and bad checkpoints are typed errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cadenza.export.families import csm as fam

TEXTS = ["Hello there.", "Zoë says: ça va? Fine, thanks!", "日本語のテキスト、こんにちは。"]


def hf_prompt(tokenizer, text: str, speaker: int = 0) -> list[int]:
    return [fam.BOS, *tokenizer(f"[{speaker}]{text}", add_special_tokens=False).input_ids, fam.EOS_TEXT]


@torch.no_grad()
def hf_greedy(model, prompt: list[int], frames: int, context: torch.Tensor | None = None) -> np.ndarray:
    """The family's forward, driven by hand (greedy, every codebook restricted to Mimi's codes).

    context: optional inputs_embeds [1, n, D] placed before the prompt (a voice's context segment).
    """
    C, K = model.codec_model.config.codebook_size, model.config.num_codebooks
    x = model.embed_text_tokens(torch.tensor([prompt]))  # [1, P, D]
    if context is not None:
        x = torch.cat([context, x], dim=1)
    out = model.backbone_model(inputs_embeds=x, use_cache=True)
    h, cache, frames_out = out.last_hidden_state[:, -1], out.past_key_values, []
    for _ in range(frames):
        codes = [int(model.lm_head(h)[0, :C].argmax())]
        d = model.depth_decoder(input_ids=torch.tensor([[0, codes[0]]]), backbone_last_hidden_state=h,
                                use_cache=True)
        for k in range(1, K):
            codes.append(int(d.logits[0, -1, :C].argmax()))
            if k < K - 1:
                d = model.depth_decoder(input_ids=torch.tensor([[codes[-1]]]), past_key_values=d.past_key_values,
                                        use_cache=True, logits_to_keep=1)
        frames_out.append(codes)
        x = model.backbone_model.embed_tokens(torch.tensor([[codes]]))  # [1, 1, D]: the K embeddings summed
        out = model.backbone_model(inputs_embeds=x, past_key_values=cache, use_cache=True)
        h, cache = out.last_hidden_state[:, -1], out.past_key_values
    return np.array(frames_out).T


@pytest.fixture(scope="module")
def tokenizer(csm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(csm_dir)


@pytest.fixture(scope="module")
def engine(csm_bundle, tmp_path_factory):
    from cadenza.engine import Engine

    with Engine.load(csm_bundle, threads=1, max_streams=3, voice_store=tmp_path_factory.mktemp("voices")) as e:
        yield e


def test_tokenization_equals_the_checkpoints_tokenizer(csm_bundle, tokenizer):
    from cadenza.engine.contract.bundle import Bundle

    b = Bundle.load(csm_bundle)
    for text in TEXTS:
        assert b.tokenizer.encode(text) == tokenizer(text, add_special_tokens=False).input_ids
        assert b.prompt.tokens(b.tokenizer, text, "1") == hf_prompt(tokenizer, text, 1)


@pytest.mark.parametrize("text,speaker", [(TEXTS[0], 0), (TEXTS[1], 1), (TEXTS[2], 0)])
def test_greedy_codes_equal_the_familys_own_loop(engine, csm_hf, tokenizer, text, speaker):
    want = hf_greedy(csm_hf, hf_prompt(tokenizer, text, speaker), 4)
    got = engine.synthesize(text, voice=speaker, greedy=True, frames=4).codes
    assert got.shape == (32, 4)
    np.testing.assert_array_equal(got, want)


def test_mixed_batch_gives_each_stream_its_own_codes(engine, csm_hf, tokenizer):
    streams = [engine.stream(t, voice=i % 2, greedy=True, frames=3) for i, t in enumerate(TEXTS)]
    for s in streams:
        s.read_all()
    for i, (s, t) in enumerate(zip(streams, TEXTS)):
        np.testing.assert_array_equal(s.codes, hf_greedy(csm_hf, hf_prompt(tokenizer, t, i % 2), 3))


def test_pcm_equals_mimi_and_streams_exactly(engine, csm_hf):
    s = engine.stream("A longer sentence, to stream in several chunks.", voice=0, seed=3, frames=12)
    chunks = list(s)
    pcm = np.concatenate([c.pcm for c in chunks])
    with torch.no_grad():
        want = csm_hf.codec_model.decode(torch.as_tensor(s.codes)[None]).audio_values[0, 0].numpy()
    peak = np.abs(want).max()
    assert len(chunks) > 2 and len(pcm) == len(want) == 12 * 1920 and peak > 0.05
    assert np.abs(pcm - want).max() <= 1e-4 * peak  # carried state: streamed chunks == one decode


def test_a_voice_from_a_sample_is_a_context_segment(engine, csm_hf, tokenizer):
    """`voices.add(sample, transcript=...)`: Mimi codes of the sample, then an all-zero frame, after the
    transcript's prompt; the family's loop with the same context gives the same codes (cached or not)."""
    from audio_samples import voiced, wav_bytes

    v = engine.voices.add(wav_bytes(voiced(seconds=1.5), 24000), "ctx", transcript="a short sample")
    assert v.prompt_codes.shape[0] == 32 and v.prompt_codes.shape[1] >= 18
    with torch.no_grad():
        codes = torch.as_tensor(np.concatenate([v.prompt_codes, np.zeros((32, 1), np.int64)], axis=1)).T[None]
        context = torch.cat([csm_hf.embed_text_tokens(torch.tensor([hf_prompt(tokenizer, "a short sample")])),
                             csm_hf.backbone_model.embed_tokens(codes)], dim=1)  # [1, n, D]
    want = hf_greedy(csm_hf, hf_prompt(tokenizer, TEXTS[0]), 3, context)
    for _ in range(2):  # the second stream copies the cached context prefix
        np.testing.assert_array_equal(engine.synthesize(TEXTS[0], voice="ctx", greedy=True, frames=3).codes, want)
    assert engine.scheduler.prefixes.hits >= 1


def test_a_sample_encodes_like_mimi(engine, csm_hf):
    from audio_samples import voiced

    pcm = voiced(seconds=1.0)[: 12 * 1920].astype(np.float32)
    got = engine.voices.encoder.prompt_codes(pcm)
    with torch.no_grad():
        want = csm_hf.codec_model.encode(torch.as_tensor(pcm)[None, None]).audio_codes[0].numpy()
    np.testing.assert_array_equal(got, want)


def test_manifest_records_the_token_map(csm_bundle):
    m = json.loads((csm_bundle / "manifest.json").read_text())
    assert m["family"] == "csm" and m["layout"]["kind"] == "depth" and m["layout"]["eos"] == "zero_frame"
    assert m["layout"]["depth_prime"] == 1 and m["layout"]["allowed"][0] == [0, 2048]
    assert m["layout"]["logits_size"] == 2051 and m["codec"] == {"kind": "stateful"}
    assert m["sampling"] == {"temperature": 0.9, "top_k": 50}
    assert {s["dtype"] for s in m["graphs"]["codec_decode"]["state"]} == {"float32", "int64"}


def test_another_architecture(tmp_path, csm_dir, edited_copy):
    from cadenza.export.families import export_family
    from cadenza.export.families.checkpoint import CheckpointError

    d = edited_copy(csm_dir, "ckpt", architectures=["LlamaForCausalLM"])
    with pytest.raises(CheckpointError, match="CsmForConditionalGeneration"):
        export_family("csm", str(d), tmp_path / "out")
    with pytest.raises(CheckpointError, match="inside its checkpoint"):
        export_family("csm", str(csm_dir), tmp_path / "out", codec="some/snac")
