"""The torch backend against the ORT generator and the eager reference.

Greedy codes must equal `cadenza.export.reference.generate` and the ORT engine
exactly (K = 4 and K = 1), through the real Scheduler, eagerly and through the
graph path (`SimulatedRuntime`: padded buckets, static inputs, capture then
clear). Rows never see each other (KV isolation, compaction on remove), seeded
sampling is per stream, and the codec decoder streams seam-free. The `gpu`
tests repeat the parity on CUDA graphs.
"""
from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cadenza.engine.contract import text as tok  # noqa: E402
from cadenza.engine.contract.length import LengthPolicy  # noqa: E402
from cadenza.engine.backends.torch.cuda_graph import SimulatedRuntime  # noqa: E402
from cadenza.engine.errors import BackendUnavailable, BundleError, KVCacheExhausted  # noqa: E402
from cadenza.engine.runtime.generator import PrefillItem, Row  # noqa: E402
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler  # noqa: E402
from cadenza.export.reference import generate  # noqa: E402

TEXTS = ["Hello world.", "Zoë says: ça va? Fine, thanks!", "One, two, three."]
MODES = [pytest.param({}, id="eager"), pytest.param({"graph_runtime": "sim"}, id="graph-sim")]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest, and on a busy 2-core machine much faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def TorchGenerator(*args, **kwargs):
    """Imported at run time, not at collection: the backend imports `cadenza.kernels`, whose Triton
    kernels tests/kernels/conftest.py wants decorated only after it has set TRITON_INTERPRET."""
    from cadenza.engine.backends.torch.generator import TorchGenerator as Gen

    return Gen(*args, **kwargs)


def _kwargs(mode: dict) -> dict:
    return {k: SimulatedRuntime() if v == "sim" else v for k, v in mode.items()}


@contextlib.contextmanager
def torch_engine(bundle_path, **gen_kwargs):
    """An ORT Engine whose generator is swapped for a TorchGenerator with test-only options (a
    simulated graph runtime, padding); `Engine.load(..., backend="torch")` is the plain way."""
    from cadenza.engine import Engine

    with Engine.load(bundle_path, max_streams=3, max_len=256) as eng:
        with eng.scheduler.cond:  # the loop thread is idle: nothing was submitted yet
            eng.gen.close()
            eng.gen = eng.scheduler.gen = TorchGenerator(eng.bundle, eng.slots, eng.max_len, **gen_kwargs)
        yield eng


def _engine_codes(eng, texts, **sampling) -> list[np.ndarray]:
    streams = [eng.stream(t, greedy=True, **sampling) for t in texts]  # concurrent: one batch
    for s in streams:
        s.read_all()
    return [s.codes for s in streams]


# --- greedy parity through the Scheduler -----------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k1", [False, True], ids=["K4", "K1"])
def test_greedy_parity_engine(request, mode, k1):
    from cadenza.engine import Engine

    bundle = request.getfixturevalue("tiny_bundle_k1" if k1 else "tiny_bundle")
    model = request.getfixturevalue("tiny_model_k1" if k1 else "tiny_model")
    refs = [generate(model, t).numpy() for t in TEXTS]
    with Engine.load(bundle, max_streams=3, max_len=256) as eng:
        ort_codes = _engine_codes(eng, TEXTS)
    with torch_engine(bundle, **_kwargs(mode)) as eng:
        torch_codes = _engine_codes(eng, TEXTS)
        again = _engine_codes(eng, TEXTS[:1])  # a second stream: its voice prefix now comes from the cache
    for ref, o, t in zip(refs, ort_codes, torch_codes):
        assert ref.shape[0] == (1 if k1 else 4) and ref.shape[1] > 0
        np.testing.assert_array_equal(o, ref)
        np.testing.assert_array_equal(t, ref)
    np.testing.assert_array_equal(again[0], refs[0])


@pytest.mark.parametrize("sampling", [
    pytest.param({"temperature": 0.8, "top_k": 50}, id="t0.8-k50"),
    pytest.param({"temperature": 1.1, "top_k": 0, "top_p": 0.9, "repetition_penalty": 1.3}, id="t1.1-p0.9-rep"),
])
def test_seeded_sampling_gives_the_same_codes_on_ort_and_torch(tiny_bundle, tiny_model, sampling):
    """One sampling definition and one random generator: a seed gives the same codes on every backend
    (and in the eager reference), for streams sampled together in one batch."""
    from cadenza.engine import Engine
    from cadenza.export.reference import RefSampling

    kw = dict(frames=24, **sampling)
    codes = {}
    for backend in ("ort", "torch"):
        with Engine.load(tiny_bundle, backend=backend, max_streams=3, max_len=256, threads=1) as eng:
            streams = [eng.stream(t, seed=10 + i, **kw) for i, t in enumerate(TEXTS)]
            for s in streams:
                s.read_all()
            codes[backend] = [s.codes for s in streams]
    for o, t in zip(codes["ort"], codes["torch"]):
        assert o.shape == (4, 24)
        np.testing.assert_array_equal(t, o)
    assert not np.array_equal(codes["ort"][0], codes["ort"][1])
    if "repetition_penalty" not in sampling:  # the reference loop has no repetition penalty
        ref = generate(tiny_model, TEXTS[0], frames=24,
                       sampling=RefSampling(sampling["temperature"], sampling["top_k"], 1.0, seed=10)).numpy()
        np.testing.assert_array_equal(ref, codes["ort"][0])


def test_forced_frames_and_repetition_penalty_match_ort(tiny_bundle):
    """EOS banned up to `frames`, and the greedy repetition penalty, as the ORT generator applies them."""
    from cadenza.engine import Engine

    kw = {"frames": 12, "repetition_penalty": 1.5, "repetition_window": 4}
    with Engine.load(tiny_bundle, max_streams=3, max_len=256) as eng:
        want = [eng.synthesize(t, greedy=True, **kw).codes for t in TEXTS[:2]]
    with torch_engine(tiny_bundle, graph_runtime=SimulatedRuntime()) as eng:
        got = [eng.synthesize(t, greedy=True, **kw).codes for t in TEXTS[:2]]
    for w, g in zip(want, got):
        assert w.shape == (4, 12)
        np.testing.assert_array_equal(g, w)


# --- the generator driven directly -----------------------------------------------------------
def _row(text: str, K: int, frames: int | None = None, **params) -> Row:
    if "temperature" not in params:
        params.setdefault("greedy", True)
    row = Row(StreamSampler(SamplingParams(**params), K), forced=frames is not None)
    row.min_frames, row.max_frames = (frames, frames) if frames else LengthPolicy().bounds(text, 12.5)
    return row


def add(gen, row: Row, text: str | None = None, tokens=None, voice=None) -> Row:
    """Add `row` and prefill it with the text's prompt (or `tokens` after its cached prefix)."""
    gen.add(row)
    gen.prefill([PrefillItem(row, tokens if tokens is not None else tok.prompt_tokens(text),
                             np.zeros(256, np.float32) if voice is None else voice)])
    return row


def drive(gen, specs: list[dict], remove_at: dict | None = None) -> dict:
    """A small scheduler: spec i joins at frame `join`, leaves on EOS / max_frames (or at `remove_at[i]`)."""
    out = {i: [] for i in range(len(specs))}
    owner = {}
    t, remove_at = 0, remove_at or {}
    while t == 0 or len(gen.rows) or any(s.get("join", 0) >= t for s in specs):
        for i, s in enumerate(specs):
            if s.get("join", 0) == t:
                owner[s["row"]] = i
                add(gen, s["row"], s["text"])
        frames = gen.frame()
        leaving = []
        for row, f in zip(list(gen.rows), frames):
            if f is not None:
                out[owner[row]].append(f)
            if f is None or row.segment_done or remove_at.get(owner[row]) == t:
                leaving.append(row)
        for row in leaving:
            gen.remove(row)
        gen.step()
        t += 1
    return {i: np.stack(v, axis=1) if v else np.zeros((gen.n_codebooks, 0), np.int64) for i, v in out.items()}


@pytest.fixture(scope="module")
def tiny_torch(tiny_model):
    return TorchGenerator(None, 4, 256, model=tiny_model)


@pytest.mark.parametrize("params", [
    pytest.param({"greedy": True}, id="greedy"),
    pytest.param({"temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 7}, id="sampled"),
])
@pytest.mark.parametrize("pad", [False, True], ids=["exact", "padded"])
def test_rows_are_isolated(tiny_model, params, pad):
    """A stream's codes do not depend on its neighbours, their join times or the bucket padding."""
    gen = TorchGenerator(None, 4, 256, model=tiny_model, pad_batches=pad)
    K = gen.n_codebooks
    alone = drive(gen, [{"text": TEXTS[0], "row": _row(TEXTS[0], K, 20, **params)}])[0]
    mixed = drive(gen, [
        {"text": TEXTS[1], "row": _row(TEXTS[1], K, 9, temperature=1.2, seed=1)},
        {"text": TEXTS[0], "row": _row(TEXTS[0], K, 20, **params), "join": 2},
        {"text": TEXTS[2], "row": _row(TEXTS[2], K, 30, temperature=0.7, seed=2), "join": 3},
    ])
    assert alone.shape == (K, 20)
    np.testing.assert_array_equal(mixed[1], alone)


def test_seeded_sampling_is_reproducible(tiny_torch):
    K = tiny_torch.n_codebooks
    runs = [drive(tiny_torch, [{"text": TEXTS[0], "row": _row(TEXTS[0], K, 16, temperature=1.0, seed=s)}])[0]
            for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize("mode", MODES)
def test_remove_compacts_rows(tiny_model, mode):
    """Removing a middle row (as the scheduler does, between frame and step) moves the last row intact."""
    gen = TorchGenerator(None, 4, 256, model=tiny_model, **_kwargs(mode))
    K = gen.n_codebooks
    solo = [drive(gen, [{"text": t, "row": _row(t, K, 15)}])[0] for t in TEXTS]
    specs = [{"text": t, "row": _row(t, K, 15)} for t in TEXTS]
    got = drive(gen, specs, remove_at={0: 4})  # row 0 leaves after frame 4; row 2 moves into slot 0
    np.testing.assert_array_equal(got[0], solo[0][:, :5])
    np.testing.assert_array_equal(got[1], solo[1])
    np.testing.assert_array_equal(got[2], solo[2])


def test_acoustic_prompt_and_prefix_copy_match_ort(tiny_bundle, tiny_model):
    """feed_frames / read_prefix / load_prefix, then a segment prefill: same logits path as ORT."""
    from cadenza.engine.backends.ort.generator import OrtGenerator
    from cadenza.engine.contract.bundle import Bundle

    bundle = Bundle.load(tiny_bundle)
    prompt = np.random.default_rng(0).integers(0, 64, (4, 5))
    outs = []
    for gen in (OrtGenerator(bundle, 2, 128, threads=1), TorchGenerator(None, 2, 128, model=tiny_model)):
        r0, r1 = _row("Hi.", 4, 10), _row("Hi.", 4, 10)
        add(gen, r0, tokens=[tok.VOICE, tok.BOS, *tok.encode("hey"), tok.EOT])
        gen.feed_frames(r0, prompt)
        prefix = gen.read_prefix(r0)
        gen.add(r1)
        gen.load_prefix(r1, prefix)
        voice = np.zeros(256, np.float32)
        gen.prefill([PrefillItem(r, tok.prompt_tokens("Hi.", with_voice=False), voice) for r in (r0, r1)])
        frames = []
        for _ in range(6):
            frames.append(gen.frame())
            gen.step()
        outs.append((prefix, frames))
        gen.close()
    (p_ort, f_ort), (p_t, f_t) = outs
    np.testing.assert_allclose(p_t, p_ort, atol=1e-4)
    for a, b in zip(f_ort, f_t):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_full_slot_raises_at_step(tiny_model):
    gen = TorchGenerator(None, 2, 16, model=tiny_model)
    row = add(gen, _row("Hi.", gen.n_codebooks, 50), "Hi.")  # 6 positions
    for _ in range(16 - 6):
        gen.frame()
        gen.step()
    assert row.position == 16
    assert gen.frame()[0] is not None  # the last frame is still sampled ...
    with pytest.raises(KVCacheExhausted, match="raise max_len"):
        gen.step()  # ... but it cannot be stored


def test_read_codes_batches_the_ring(tiny_torch):
    gen = tiny_torch
    for t in TEXTS[:2]:
        add(gen, _row(t, gen.n_codebooks, 40), t)
    gen.read_codes(gen.frames_ready)  # start a fresh batch
    frames = []
    for _ in range(5):
        frames.append(gen.frame())
        gen.step()
    assert gen.frames_ready == 5
    ring = gen.read_codes()  # [5, S, K]
    assert ring.shape == (5, gen.rows.slots, gen.n_codebooks) and gen.frames_ready == 0
    for f in range(5):
        for b in range(2):
            np.testing.assert_array_equal(ring[f, b], frames[f][b])
    for _ in range(3):  # queued with no per-frame sync, read once
        gen.launch()
        gen.step()
    assert gen.read_codes().shape[0] == 3
    with pytest.raises(RuntimeError, match="before step"):
        gen.frame()
        gen.frame()
    gen.step()
    while len(gen.rows):
        gen.remove(gen.rows.rows[0])


def test_missing_weights_is_a_bundle_error(tmp_path):
    fake = types.SimpleNamespace(path=tmp_path, manifest={"files": {}}, family="cadenza-reference")
    with pytest.raises(BundleError, match="no PyTorch weights"):
        TorchGenerator(fake, 1, 64)


def test_bfloat16_runs_or_names_the_fix(tiny_model):
    import copy

    try:
        gen = TorchGenerator(None, 2, 64, dtype=torch.bfloat16, model=copy.deepcopy(tiny_model))
    except BackendUnavailable as e:
        assert "rope" in str(e)
        return
    add(gen, _row("Hi.", gen.n_codebooks, 4), "Hi.")
    assert gen.frame()[0].shape == (gen.n_codebooks,)


def test_penalty_twin_and_kv_write():
    """The sync-free penalty equals the kernel reference; one index_put_ writes every layer's K/V."""
    from cadenza.engine.backends.torch.frame import penalise_no_sync, write_kv
    from cadenza.kernels.penalty import apply_repetition_penalty_reference

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g)
    ids = torch.randint(-1, 50, (4, 8), generator=g)
    pen = 1 + torch.rand(4, generator=g)
    torch.testing.assert_close(penalise_no_sync(logits.clone(), ids, pen),
                               apply_repetition_penalty_reference(logits.clone(), ids, pen))
    cache = torch.randn(3, 2, 5, 2, 8, 4, generator=g)  # [L, 2, S, H, T, D]
    new = torch.randn(3, 2, 3, 2, 4, generator=g)  # [L, 2, n, H, D]
    rows, pos, valid = torch.tensor([0, 1, 2]), torch.tensor([3, 0, 7]), torch.tensor([1, 1, 0])
    want = cache.clone()
    for i in range(3):
        want[:, :, rows[i], :, pos[i] if valid[i] else 7] = new[:, :, i]
    got = cache.clone()
    write_kv(got, new, rows, pos, valid)
    torch.testing.assert_close(got, want)


# --- on a GPU -------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
def test_cuda_greedy_parity(graph):
    from cadenza.export.model.config import TTSConfig
    from cadenza.export.model.model import TTSModel

    cpu_model = TTSModel.from_config(TTSConfig.from_name("tiny"))
    refs = [generate(cpu_model, t, frames=16).numpy() for t in TEXTS]
    gen = TorchGenerator(None, 4, 256, device="cuda", dtype=torch.float32, use_cuda_graph=graph,
                         model=TTSModel.from_config(TTSConfig.from_name("tiny")))
    assert (gen.graphs is not None) == graph
    got = drive(gen, [{"text": t, "row": _row(t, gen.n_codebooks, 16), "join": i} for i, t in enumerate(TEXTS)])
    for i, ref in enumerate(refs):
        np.testing.assert_array_equal(got[i], ref)


@pytest.mark.gpu
@needs_cuda
def test_cuda_switch_and_batched_reads(monkeypatch):
    """CADENZA_NO_CUDA_GRAPH=1 runs eagerly on CUDA; frames queued without a sync read back from the ring."""
    from cadenza.export.model.config import TTSConfig
    from cadenza.export.model.model import TTSModel

    monkeypatch.setenv("CADENZA_NO_CUDA_GRAPH", "1")
    model = TTSModel.from_config(TTSConfig.from_name("tiny"))
    assert TorchGenerator(None, 2, 64, device="cuda", dtype=torch.float32, model=model).graphs is None
    monkeypatch.delenv("CADENZA_NO_CUDA_GRAPH")
    gen = TorchGenerator(None, 4, 128, device="cuda", dtype=torch.float32, model=model)
    assert gen.graphs is not None
    for t in TEXTS:
        add(gen, _row(t, gen.n_codebooks, 50), t)
    want = []
    for _ in range(4):
        want.append(gen.frame())
        gen.step()
    for _ in range(4):
        gen.launch()
        gen.step()
    ring = gen.read_codes(8)  # [8, S, K]: one copy for eight frames
    for f in range(4):
        for b in range(3):
            np.testing.assert_array_equal(ring[f, b], want[f][b])
    assert [r.position for r in gen.rows] == [len(tok.prompt_tokens(t)) + 8 for t in TEXTS]


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_sampling_matches_eager_bf16():
    from cadenza.export.model.config import TTSConfig
    from cadenza.export.model.model import TTSModel

    out = []
    for graph in (False, True):  # eager padded like the graphs: the same GEMM shapes, the same bf16 numbers
        try:
            gen = TorchGenerator(None, 8, 128, device="cuda", use_cuda_graph=graph, pad_batches=True,
                                 model=TTSModel.from_config(TTSConfig.from_name("tiny")))
        except BackendUnavailable as e:
            pytest.skip(f"bf16 needs the model fix this names: {e}")
        specs = [{"text": t, "row": _row(t, gen.n_codebooks, 12, temperature=0.9, top_k=20, seed=i)}
                 for i, t in enumerate(TEXTS)]
        out.append(drive(gen, specs))
    for i in range(len(TEXTS)):
        np.testing.assert_array_equal(out[1][i], out[0][i])


def test_streams_admitted_between_frame_and_step(tiny_bundle):
    """One slot, several one-frame streams at once: each stream's only frame ends it, and the next
    waiting stream is admitted while its first chunk decodes, before step() (no stray RuntimeError)."""
    import threading

    from cadenza.engine import Engine

    with Engine.load(tiny_bundle, backend="torch", max_streams=1, threads=1) as e:
        out, errors = [], []

        def run():
            try:
                out.append(len(e.stream("Hello there.", frames=1, greedy=True).read_all()))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        assert errors == [] and out == [e.hop] * 4
        assert e.active_streams == 0
