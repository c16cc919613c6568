"""`Engine` end to end on the tiny bundle: parity with the PyTorch reference, streamed
audio against one offline decode, exact frame counts, seeds, typed errors, long text.

Tolerances: codes are compared exactly (greedy decoding must reproduce
`cadenza.export.reference.generate`); PCM against the torch codec within 1e-4
max-abs (ONNX Runtime vs PyTorch float32), streamed chunks against the engine's
own offline decode within 1e-5 (same graph, different chunking).
"""
from __future__ import annotations

import numpy as np
import pytest

from cadenza.engine import ChunkSchedule, Engine
from cadenza.engine.contract import text as tok
from cadenza.engine.errors import (BackendUnavailable, BundleError, KVCacheExhausted, SamplingError, TextError)
from support import LONG_TEXT, TEXTS, assert_contiguous, read

HOP = 1920
SR = 24000


@pytest.mark.parametrize("text", [pytest.param(t, id=k) for k, t in TEXTS.items()])
def test_greedy_stream_equals_reference(text, engine, reference):
    res = read(engine.stream(text, greedy=True))
    want = reference.codes(text)
    assert res.codes.dtype == np.int64 and res.codes.shape[0] == 4
    np.testing.assert_array_equal(res.codes, want)
    assert_contiguous(res.chunks, want.shape[1], HOP)
    assert res.chunks[0].sample_rate == SR
    np.testing.assert_allclose(res.pcm, reference.pcm(want), rtol=0, atol=1e-4)


def test_greedy_stream_equals_reference_k1(tiny_bundle_k1, make_engine, reference):
    e = make_engine(tiny_bundle_k1, max_streams=2)
    assert e.n_codebooks == 1
    for text in (TEXTS["short"], TEXTS["utf8"]):
        res = read(e.stream(text, greedy=True))
        want = reference.codes(text, model="k1")
        assert want.shape[0] == 1
        np.testing.assert_array_equal(res.codes, want)
        np.testing.assert_allclose(res.pcm, reference.pcm(want, model="k1"), rtol=0, atol=1e-4)


def test_voice_embedding_reaches_output_and_matches_reference(engine, reference, tiny_model):
    import torch

    from cadenza.export.reference import generate

    rng = np.random.default_rng(7)
    voice = rng.standard_normal(engine.constants.speaker_dim).astype(np.float32)
    voice /= np.linalg.norm(voice)
    text = TEXTS["short"]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = generate(tiny_model, text, torch.from_numpy(voice)).numpy()
    finally:
        torch.set_num_threads(torch_threads)
    first = read(engine.stream(text, voice, greedy=True)).codes
    again = read(engine.stream(text, voice, greedy=True)).codes  # the voice prefix now comes from the cache
    np.testing.assert_array_equal(first, want)
    np.testing.assert_array_equal(again, want)
    neutral = reference.codes(text)
    assert first.shape != neutral.shape or not np.array_equal(first, neutral), "the voice changed nothing"


SCHEDULES = [pytest.param(ChunkSchedule(first=1, growth=1, max_frames=1), id="1-1-1"),
             pytest.param(ChunkSchedule(first=2, growth=1.5, max_frames=5), id="2-1.5-5"),
             pytest.param(ChunkSchedule(first=1, growth=2, max_frames=8), id="1-2-8")]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_streamed_chunks_equal_offline_decode(schedule, make_engine):
    e = make_engine(chunk=schedule, max_streams=2)
    for kwargs in (dict(greedy=True), dict(seed=3)):
        res = read(e.stream("The quick brown fox jumps over the lazy dog.", **kwargs))
        F = res.codes.shape[1]
        assert F > schedule.max_frames
        assert_contiguous(res.chunks, F, HOP)
        sizes = [c.frames[1] - c.frames[0] for c in res.chunks]
        assert sizes[0] == schedule.first
        assert max(sizes) <= schedule.max_frames
        offline = e.decode(res.codes)
        assert offline.shape == (F * HOP,)
        np.testing.assert_allclose(res.pcm, offline, rtol=0, atol=1e-5)


def test_chunk_schedule_validation():
    for bad in (dict(first=0), dict(first=9, max_frames=8), dict(growth=0.5)):
        with pytest.raises(ValueError):
            ChunkSchedule(**bad)


@pytest.mark.parametrize("n", [1, 3, 17])
def test_frames_gives_exactly_n_frames(n, engine, reference):
    text = TEXTS["short"]
    res = read(engine.stream(text, frames=n, greedy=True))
    assert res.codes.shape == (4, n)
    assert len(res.pcm) == n * HOP
    assert res.stream.metrics.frames == n
    np.testing.assert_array_equal(res.codes, reference.codes(text, frames=n))


def test_frames_beyond_natural_end_of_speech(engine, reference):
    """frames=N ignores end-of-speech: more frames than the text's cap are still exactly N."""
    text = "Hi."
    _, cap = engine.bundle.length.bounds(text, engine.frame_rate)
    res = read(engine.stream(text, frames=cap + 20, greedy=True))
    assert res.codes.shape[1] == cap + 20
    np.testing.assert_array_equal(res.codes, reference.codes(text, frames=cap + 20))


def test_same_seed_same_output_different_seed_different_codes(engine):
    text = "Seeds make sampling repeatable."
    a = read(engine.stream(text, seed=1234, temperature=0.9, top_k=50))
    b = read(engine.stream(text, seed=1234, temperature=0.9, top_k=50))
    c = read(engine.stream(text, seed=4321, temperature=0.9, top_k=50))
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.pcm, b.pcm)
    assert a.stream.metrics.seed == 1234
    assert a.codes.shape != c.codes.shape or not np.array_equal(a.codes, c.codes)


def test_unseeded_streams_record_their_seed(engine):
    """seed=None draws a seed and records it; replaying that seed reproduces the codes."""
    s = read(engine.stream("Random but replayable.", temperature=0.9))
    seed = s.stream.metrics.seed
    assert isinstance(seed, int)
    again = read(engine.stream("Random but replayable.", temperature=0.9, seed=seed))
    np.testing.assert_array_equal(s.codes, again.codes)


def test_synthesize_equals_stream(engine):
    syn = engine.synthesize(TEXTS["short"], greedy=True)
    res = read(engine.stream(TEXTS["short"], greedy=True))
    np.testing.assert_array_equal(syn.codes, res.codes)
    np.testing.assert_allclose(syn.pcm, res.pcm, rtol=0, atol=1e-5)
    assert syn.sample_rate == SR and syn.seconds == pytest.approx(len(res.pcm) / SR)
    assert syn.metrics["frames"] == res.codes.shape[1]


BAD_STREAMS = [
    pytest.param(dict(text=""), TextError, "empty", id="empty"),
    pytest.param(dict(text="  \n\t  "), TextError, "empty", id="whitespace"),
    pytest.param(dict(text="a" * 300), TextError, "max_len", id="unbreakable-word"),
    pytest.param(dict(temperature=-0.5), SamplingError, "temperature", id="temperature<0"),
    pytest.param(dict(top_p=0.0), SamplingError, "top_p", id="top_p=0"),
    pytest.param(dict(top_p=1.5), SamplingError, "top_p", id="top_p>1"),
    pytest.param(dict(top_k=-1), SamplingError, "top_k", id="top_k<0"),
    pytest.param(dict(repetition_penalty=0.9), SamplingError, "repetition_penalty", id="penalty<1"),
    pytest.param(dict(seed=-1), SamplingError, "seed", id="seed<0"),
    pytest.param(dict(frames=600), KVCacheExhausted, "max_len", id="frames>max_len"),
    pytest.param(dict(frames=0), ValueError, "frames", id="frames=0"),
    pytest.param(dict(voice=np.zeros(3, np.float32)), ValueError, "voice", id="voice-shape"),
    pytest.param(dict(voice=np.full(256, np.nan, np.float32)), ValueError, "voice", id="voice-nan"),
]


@pytest.mark.parametrize("kwargs, error, mentions", BAD_STREAMS)
def test_bad_input_gives_typed_error_and_engine_still_works(kwargs, error, mentions, engine, reference):
    kwargs = dict(kwargs)
    text = kwargs.pop("text", TEXTS["short"])
    voice = kwargs.pop("voice", None)
    with pytest.raises(error, match=mentions):
        engine.stream(text, voice, **kwargs)
    assert engine.active_streams == 0
    assert not engine.scheduler.waiting
    res = read(engine.stream(TEXTS["short"], greedy=True))
    np.testing.assert_array_equal(res.codes, reference.codes(TEXTS["short"]))


def test_text_error_and_sampling_error_are_value_errors():
    assert issubclass(TextError, ValueError) and issubclass(SamplingError, ValueError)


def test_unknown_backend(tiny_bundle, engine):
    with pytest.raises(BackendUnavailable, match="nope"):
        Engine.load(tiny_bundle, backend="nope")
    assert read(engine.stream("Still here.", frames=2, greedy=True)).codes.shape == (4, 2)


@pytest.mark.parametrize("where", ["missing", "file", "empty-dir"])
def test_bad_bundle_path(where, tmp_path, engine):
    path = tmp_path / "bundle"
    if where == "file":
        path.write_text("not a bundle")
    elif where == "empty-dir":
        path.mkdir()
    with pytest.raises(BundleError, match="cadenza export"):
        Engine.load(path)
    assert read(engine.stream("Still here.", frames=2, greedy=True)).codes.shape == (4, 2)


def test_engine_arguments_are_checked(tiny_bundle):
    with pytest.raises(ValueError, match="max_len"):
        Engine.load(tiny_bundle, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        Engine.load(tiny_bundle, max_len=10_000)
    with pytest.raises(ValueError, match="max_streams"):
        Engine.load(tiny_bundle, max_streams=0)
    with pytest.raises(KVCacheExhausted, match="max_len"):
        Engine.load(tiny_bundle, memory_budget_mb=1e-6)


def test_memory_budget_caps_the_slots(make_engine):
    # tiny: 2 layers x 2 (K, V) x 2 kv heads x 512 positions x 16 dims x 4 bytes = 256 KiB per slot
    e = make_engine(max_streams=8, memory_budget_mb=0.6)
    assert e.slots == 2


def _segments(engine, text):
    """The engine's own split of `text` (white-box: its segment byte limit)."""
    return tok.split_text(text, engine.bundle.length.longest_text(engine.max_len - 1, engine.frame_rate))


def test_long_text_streams_as_one_seamless_stream(make_engine, reference):
    e = make_engine(max_len=64, max_streams=2)
    s = e.stream(LONG_TEXT, greedy=True)
    res = read(s)
    m = s.metrics
    assert m.segments > 1
    F = res.codes.shape[1]
    assert_contiguous(res.chunks, F, HOP)
    np.testing.assert_allclose(res.pcm, e.decode(res.codes), rtol=0, atol=1e-5)  # no seam between segments
    # each segment is generated from a fresh prompt: the codes are the reference's, segment after segment
    segs = _segments(e, LONG_TEXT)
    assert len(segs) == m.segments
    want = np.concatenate([reference.codes(seg) for seg in segs], axis=1)
    np.testing.assert_array_equal(res.codes, want)
    assert m.summary()["segments"] == m.segments and m.frames == F


def test_long_text_with_frames_is_refused(make_engine):
    e = make_engine(max_len=64, max_streams=1)
    with pytest.raises(KVCacheExhausted, match="segment"):
        e.stream(LONG_TEXT, frames=4)
    assert read(e.stream("Short.", frames=3, greedy=True)).codes.shape == (4, 3)


def test_closed_engine_refuses_streams(make_engine):
    from cadenza.engine.errors import EngineClosed

    e = make_engine(max_streams=1)
    e.close()
    with pytest.raises(EngineClosed):
        e.stream("Too late.")


@pytest.mark.parametrize("frames", [0, 1, 5, 8, 23])  # below, at and above the codec graph's chunk size (8)
def test_offline_decode_matches_torch(frames, engine, reference):
    codes = np.random.default_rng(frames).integers(0, 64, (4, frames))
    pcm = engine.decode(codes)
    assert pcm.dtype == np.float32 and pcm.shape == (frames * HOP,)
    if frames:
        np.testing.assert_allclose(pcm, reference.pcm(codes), rtol=0, atol=1e-4)


def test_chunks_are_owned_by_the_caller(engine):
    chunks = list(engine.stream(TEXTS["short"], greedy=True))
    copies = [c.pcm.copy() for c in chunks]
    for c in chunks:
        c.pcm[:] = 0  # scribbling on a handed-out chunk touches nothing else
    again = list(engine.stream(TEXTS["short"], greedy=True))
    for a, b in zip(again, copies):
        np.testing.assert_array_equal(a.pcm, b)
    assert len({id(c.pcm.base if c.pcm.base is not None else c.pcm) for c in chunks}) == len(chunks)


def test_decode_after_close_is_engine_closed(make_engine):
    from cadenza.engine.errors import EngineClosed

    e = make_engine()
    codes = read(e.stream("Then closed.", frames=2, greedy=True)).codes
    e.close()
    with pytest.raises(EngineClosed):
        e.decode(codes)


def test_decode_checks_its_codes(engine):
    with pytest.raises(ValueError, match="codes must be"):
        engine.decode(np.zeros((3, 2), np.int64))  # tiny has 4 codebooks


# --- sizing and the backend registry -------------------------------------------------------
def test_default_threads_counts_external_weight_data(tiny_bundle, tmp_path):
    """A bundle whose step weights live in `.onnx.data` (the 1b size) gets every core, not one."""
    import json
    import os
    import shutil

    from cadenza.engine.contract.bundle import Bundle

    assert Engine.default_threads(Bundle.load(tiny_bundle)) == 1  # tiny graphs: one thread
    d = shutil.copytree(tiny_bundle, tmp_path / "b")
    m = json.loads((d / "manifest.json").read_text())
    m["graphs"]["backbone"]["data"] = ["backbone.onnx.data"]
    m["files"]["backbone.onnx.data"] = "0" * 64  # loaded below without hash checks
    (d / "manifest.json").write_text(json.dumps(m))
    with open(d / "backbone.onnx.data", "wb") as f:  # sparse: 64 MiB of weights on paper
        f.truncate(64 << 20)
    assert Engine.default_threads(Bundle.load(d, verify=False)) == (os.cpu_count() or 1)


def test_kv_budget_counts_the_backends_element_size(tiny_bundle):
    from cadenza.engine.api import slots_within
    from cadenza.engine.backends import get_backend
    from cadenza.engine.contract.bundle import Bundle

    b = Bundle.load(tiny_bundle)
    c = b.constants  # 256 KiB per fp32 slot of 512 positions
    assert get_backend("ort").kv_itemsize == 0 and b.kv_itemsize == 4  # ONNX Runtime: the bundle's cache type
    assert slots_within(c, 512, 16, 1.0, b.kv_itemsize) == 4
    assert get_backend("torch-cuda").kv_itemsize == 2  # bf16 caches: twice the slots in the same budget
    assert slots_within(c, 512, 16, 1.0, get_backend("torch-cuda").kv_itemsize) == 8


def test_unknown_backend_names_the_registered_ones(tiny_bundle):
    from cadenza.engine import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="ort.*torch.*torch-cuda"):
        Engine.load(tiny_bundle, backend="tensorrt")


def test_every_documented_error_is_exported():
    import cadenza.engine as api

    for name in ("BundleError", "TextError", "SamplingError", "KVCacheExhausted", "EngineBusy", "EngineClosed",
                 "StreamCancelled", "VoiceError", "BackendUnavailable", "CadenzaError"):
        assert name in api.__all__ and issubclass(getattr(api, name), Exception), name
    assert issubclass(api.VoiceError, api.CadenzaError)


@pytest.mark.parametrize("spinning", [False, True])
def test_spinning_is_an_engine_option(tiny_bundle, spinning):
    """`spinning` reaches ONNX Runtime's sessions of the generation graphs, and changes no code."""
    with Engine.load(tiny_bundle, max_streams=1, spinning=spinning) as e:
        so = e.gen.backbone.graph.session.get_session_options()
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
        codes = e.synthesize("Spin or wait.", greedy=True, frames=6).codes
    with Engine.load(tiny_bundle, max_streams=1) as e:
        np.testing.assert_array_equal(codes, e.synthesize("Spin or wait.", greedy=True, frames=6).codes)
