"""The baselines Cadenza's engine is measured against, on the same bundle, text, seed and threads.

- `torch-eager`: the PyTorch reference model from the bundle's `weights/`,
  driven the way most projects drive such a model (the loop of
  `cadenza.export.reference.generate`): eager modules under `no_grad`, a KV
  cache grown by `torch.cat` every step, sampling in Python with torch ops.
- `ort-naive`: the bundle's ONNX graphs driven with plain `session.run` and
  fresh numpy feeds each step: no IO binding, no buffer reuse, a KV cache
  grown by `np.concatenate` every step and fed back as the past inputs.
  Tensor names come from the manifest.

- `reference`: the bundle family's own pipeline (`family_baselines.py`): for the
  reference family the same loop as `torch-eager`; for Orpheus and CSM the
  family's transformers model and codec, as their own code drives them.
- `llama.cpp` on a flat-layout (Orpheus) bundle: an orpheus-cpp-style loop,
  llama.cpp over the converted checkpoint + the bundle's SNAC graph
  (`orpheus_cpp.py`). (`llama.cpp` and `ort-genai` are also per-step peers: `peers.py`.)

All are `FrameSource`s: `begin` prefills a prompt, `next_frame` returns one
frame of codes, `decode` turns frames into PCM (the streaming codec with its
state carried between chunks, or the family's own decoding). `drive` runs one
stream over a source: synchronous, in the caller's thread, the first chunk
decoded after the first frame, later chunks growing with Cadenza's own
`ChunkSchedule` rule (unless the source has its own `schedule`), everything
timed from the call. torch is imported only when a torch source is built.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import numpy as np

from cadenza.engine.contract import text as tok
from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.runtime.metrics import StreamMetrics
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler
from cadenza.engine.runtime.pacing import ChunkSchedule

from .measure import SAMPLING, StreamRecord
from .reference_model import load_reference

# The same sampling for every engine (Cadenza's defaults): identical work, seeded.


class FrameSource(Protocol):
    sample_rate: int
    hop: int
    frame_rate: float
    n_codebooks: int

    def begin(self, text: str, seed: int) -> None: ...
    def next_frame(self) -> np.ndarray: ...
    def decode(self, codes: np.ndarray) -> np.ndarray: ...
    def close(self) -> None: ...


def drive(src: FrameSource, text: str, frames: int, seed: int, queue_s: float = 0.0,
          schedule: ChunkSchedule | None = None) -> StreamRecord:
    """Run one forced-length stream over `src`, timed from this call.

    Args:
        frames: exactly this many frames (end-of-speech is never sampled).
        queue_s: how long the request waited before this call (recorded, not slept).
        schedule: frames per chunk (default: Cadenza's `ChunkSchedule()`).
    Returns:
        the stream's `StreamRecord`.
    """
    sched = schedule or getattr(src, "schedule", lambda n: None)(frames) or ChunkSchedule()
    m = StreamMetrics(src.sample_rate, src.frame_rate, src.n_codebooks)  # t_start: now
    src.begin(text, seed)
    pending: list[np.ndarray] = []
    size, sent = sched.first, 0
    for f in range(frames):
        pending.append(src.next_frame())
        m.on_frame()
        if len(pending) < size and f + 1 < frames:
            continue
        sent += len(pending)
        pcm = src.decode(np.stack(pending, axis=1))  # [K, F] -> [F * hop] (a windowed source: fewer)
        pending.clear()
        if len(pcm):  # time-to-first-audio counts audio, not a call that returned none
            m.on_chunk(len(pcm))
        size = sched.next(size, _ahead(m, sent, size, src.hop))
    m.on_end()
    return StreamRecord.from_metrics(m, queue_s)


def _ahead(m: StreamMetrics, frames_sent: int, size: int, hop: int) -> bool:
    """Cadenza's rule: grow chunks only while the audio sent leads playback by a chunk."""
    if not m.arrivals:
        return True
    played = time.perf_counter() - m.t_start - m.arrivals[0]
    return frames_sent * hop / m.sample_rate > played + size * hop / m.sample_rate


def _constants(bundle: Bundle, src) -> None:
    c = bundle.constants
    src.sample_rate, src.hop, src.frame_rate = c.sample_rate, c.hop, c.frame_rate
    src.n_codebooks, src.eos, src.max_len = c.n_codebooks, bundle.layout.eos_column, c.max_seq_len


class TorchEager:
    """The PyTorch reference model, eager, with `torch.set_num_threads(threads)`."""

    name = "torch-eager"

    def __init__(self, bundle: str | Path, threads: int):
        import torch
        from cadenza.export import reference

        torch.set_num_threads(threads)
        self.torch, self.ref = torch, reference
        b = Bundle.load(bundle, verify=False)
        _constants(b, self)
        self.model = load_reference(b.path / "weights")

    def begin(self, text: str, seed: int) -> None:
        torch, bb = self.torch, self.model.backbone
        self.sampling = self.ref.RefSampling(seed=seed, **SAMPLING)
        self.draws = self.ref.Draws(seed, self.n_codebooks)
        ids = torch.tensor([tok.prompt_tokens(tok.check_text(text))])  # [1, P]
        P = ids.shape[1]
        with torch.no_grad():
            pk, pv = bb.transformer.empty_cache(1)
            x = bb.embed_prompt(ids, torch.zeros(1, self.model.cfg.speaker_dim))
            h, self.ck, self.cv = bb(x, torch.arange(P)[None], pk, pv, torch.zeros(1, dtype=torch.long))
        self.h, self.pos, self.last = h[:, -1], P, None  # h [1, D]
        self.codec_state = self.model.codec.decoder.zero_state(1)

    def next_frame(self) -> np.ndarray:
        torch, bb = self.torch, self.model.backbone
        with torch.no_grad():
            if self.last is not None:  # feed the previous frame back (the reference's step)
                pos = torch.tensor([self.pos])
                h, nk, nv = bb(bb.embed_codes(torch.tensor([self.last])), pos[:, None], self.ck, self.cv, pos)
                self.ck, self.cv = self.ref._grow(self.ck, self.cv, nk, nv)
                self.h, self.pos = h[:, -1], self.pos + 1
            logits = bb.head(self.h)[0]  # [C + 1]
            logits[self.eos] = float("-inf")  # forced length
            c0 = self.ref.sample_torch(logits, self.sampling, self.draws, 0)
            self.last = [c0] + self.ref._depth_codes(self.model, self.h, c0, self.sampling, self.draws)
            self.draws.frame += 1
        return np.asarray(self.last, np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            pcm, self.codec_state = self.model.codec.decode_stream(torch.from_numpy(codes)[None], self.codec_state)
        return pcm[0].numpy().copy()

    def close(self) -> None:
        self.model = None


class OrtNaive:
    """The ONNX graphs with plain `session.run`, numpy feeds and concatenated caches."""

    name = "ort-naive"

    def __init__(self, bundle: str | Path, threads: int):
        import onnxruntime as ort

        self.bundle = b = Bundle.load(bundle, verify=False)
        _constants(b, self)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        roles = ["backbone", "codec_decode"] + (["depth"] if b.has("depth") else [])
        self.sess = {r: ort.InferenceSession(str(b.graph_path(r)), so, providers=["CPUExecutionProvider"])
                     for r in roles}
        self.emb = b.embedding

    def _run(self, role: str, feeds: dict) -> dict:
        s = self.sess[role]
        return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))

    def _past(self, role: str, cache: list[np.ndarray]) -> dict:
        kv = self.bundle.graph(role)["kv"]
        names = [kv[k] % l for l in range(kv["layers"]) for k in ("past_key", "past_value")]
        return dict(zip(names, cache))

    def _grow(self, role: str, cache: list[np.ndarray], out: dict) -> list[np.ndarray]:
        """The cache after a call: the past with the new entries appended (a portable graph returns
        them; a fused graph, given no shared buffer, returns the whole grown cache)."""
        kv = self.bundle.graph(role)["kv"]
        new = [out[kv[k] % l] for l in range(kv["layers"]) for k in ("out_key", "out_value")]
        return new if kv["mode"] == "in_place" else [np.concatenate([a, b], axis=2) for a, b in zip(cache, new)]

    def _empty(self, role: str) -> list[np.ndarray]:
        kv = self.bundle.graph(role)["kv"]
        return [np.zeros((1, kv["kv_heads"], 0, kv["head_dim"]), np.float32)] * (2 * kv["layers"])

    def _backbone(self, ids: np.ndarray) -> None:
        """Append the positions `ids` [1, P, slots] after `self.pos` cached ones."""
        P = ids.shape[1]
        feeds = {"ids": ids, "seqlens_k": np.array([self.pos + P - 1], np.int32),
                 "query_seqlens": np.array([P], np.int32), **self._past("backbone", self.cache)}
        if self.bundle.constants.speaker_dim:
            feeds["voice"] = np.zeros((1, self.bundle.constants.speaker_dim), np.float32)
        out = self._run("backbone", feeds)
        self.cache = self._grow("backbone", self.cache, out)
        self.logits, self.hidden, self.pos = out["logits"], out.get("hidden"), self.pos + P

    def begin(self, text: str, seed: int) -> None:
        self.sampler = StreamSampler(SamplingParams(seed=seed, **SAMPLING), self.n_codebooks)
        tokens = tok.prompt_tokens(tok.check_text(text))
        ids = np.full((1, len(tokens), self.emb.slots), self.emb.null_row, np.int64)
        ids[0, :, 0] = self.emb.text_offset + np.array(tokens)
        self.cache, self.pos, self.last = self._empty("backbone"), 0, None
        self._backbone(ids)
        g = self.bundle.graph("codec_decode")
        self.codec_state = {s["input"]: np.zeros((1, *s["shape"]), np.float32) for s in g["state"]}

    def next_frame(self) -> np.ndarray:
        if self.last is not None:
            self._backbone((self.last + np.asarray(self.emb.code_offsets))[None, None, :])
        logits = self.logits[0].copy()
        logits[self.eos] = -np.inf  # forced length
        codes = [self.sampler.sample(logits, 0)]
        cache = self._empty("depth") if self.n_codebooks > 1 else None
        offsets = self.bundle.depth_embedding.offsets if self.n_codebooks > 1 else ()
        for p in range(self.n_codebooks - 1):
            feeds = {"hidden": self.hidden, "ids": np.array([offsets[p] + codes[-1]]), "depth_pos": np.array([p]),
                     **self._past("depth", cache)}
            out = self._run("depth", feeds)
            cache = self._grow("depth", cache, out)
            codes.append(self.sampler.sample(out["logits"][0], p + 1))
        self.last = np.asarray(codes, np.int64)
        self.sampler.end_frame(self.last)
        return self.last

    def decode(self, codes: np.ndarray) -> np.ndarray:
        g = self.bundle.graph("codec_decode")
        out = self._run("codec_decode", {g["inputs"][0]["name"]: codes[None], **self.codec_state})
        self.codec_state = {s["input"]: out[s["output"]] for s in g["state"]}
        return out[g["outputs"][0]["name"]][0]

    def close(self) -> None:
        self.sess.clear()


def reference(bundle: str | Path, threads: int):
    """The family's own pipeline for this bundle."""
    family = Bundle.load(bundle, verify=False).family
    if family == "cadenza-reference":
        return TorchEager(bundle, threads)
    from .family_baselines import FAMILY_REFERENCES

    return FAMILY_REFERENCES[family](bundle, threads)


def llama_cpp_frames(bundle: str | Path, threads: int):
    """llama.cpp's orpheus-cpp-style frame loop (flat-layout bundles; `orpheus_cpp.py`)."""
    from .orpheus_cpp import OrpheusLlamaCpp

    return OrpheusLlamaCpp(bundle, threads)


BASELINES = {"torch-eager": TorchEager, "ort-naive": OrtNaive, "reference": reference, "llama.cpp": llama_cpp_frames}
REFERENCE_FAMILY_ONLY = ("torch-eager", "ort-naive")
