"""An orpheus-cpp-style loop on an Orpheus bundle: llama.cpp backbone + the bundle's own SNAC decoder.

The `llama.cpp` baseline of `cadenza bench` on a flat-layout (Orpheus) bundle, a `FrameSource`
timed in rotation with Cadenza's engine, frame by frame. It does what orpheus-cpp does (llama.cpp
over the checkpoint's GGUF, SNAC on ONNX Runtime, a 28-token window per frame):

- the GGUF is the bundle's checkpoint converted by `peer_convert` at the bundle's precision
  (cached; `cadenza bench` converts it before the workers start);
- the prompt is the bundle's own (same tokenizer and template as Cadenza's engine); one
  `llama_decode` for it, then one per token, with llama.cpp's full-vocabulary head;
- each of the 7 tokens of a frame is sampled among the ids its frame position allows, with
  the bench's sampling and Cadenza's own sampler (the same work as the engine's sampling);
- audio: once 4 frames exist, after every new frame the last 4 frames go through the bundle's
  `codec_decode` graph (the same SNAC weights, noise off, on ONNX Runtime) and samples
  [2048, 4096) of its 8192 are emitted, as Orpheus' streaming decoder does.

llama.cpp runs with OMP_WAIT_POLICY=PASSIVE (no spinning between kernels, like Cadenza's ONNX
Runtime pools) and the bench's threads.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cadenza.engine.contract import text as tok
from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.runtime.pacing import ChunkSchedule
from cadenza.engine.runtime.sampler import SamplingParams, StreamSampler

from .measure import SAMPLING

WINDOW_FRAMES = 4


class OrpheusLlamaCpp:
    name = "llama.cpp"

    def __init__(self, bundle: str | Path, threads: int):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before libgomp loads with llama_cpp
        import llama_cpp as lc

        from cadenza.engine.backends.ort.graph import OrtGraph

        from .peer_convert import Target, cache_dir, gguf, hf_checkpoint
        from .peer_engines import quiet

        self.bundle = b = Bundle.load(bundle, verify=False)
        if b.layout.kind != "flat":
            raise ValueError("the llama.cpp frame loop drives a flat-layout (Orpheus) bundle; for the reference "
                             "family, llama.cpp is timed per backbone step (the bench's peers section)")
        c = b.constants
        self.sample_rate, self.hop, self.frame_rate, self.n_codebooks = c.sample_rate, c.hop, c.frame_rate, c.n_codebooks
        cache = cache_dir(b)
        path = gguf(hf_checkpoint(b, cache), Target.of(b), cache)
        self.lc = lc
        quiet(lc)
        lc.llama_backend_init()
        self.model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
        cp = lc.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = c.max_seq_len
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(c.max_seq_len, 0, 1)
        self.codec = OrtGraph(b, "codec_decode", {"batch": 1, "frames": WINDOW_FRAMES}, threads, False)
        self.tokenizer, self.lay = b.tokenizer, b.layout

    def schedule(self, frames: int) -> ChunkSchedule:
        return ChunkSchedule(first=1, growth=1.0, max_frames=1)  # a window decode after every frame

    def _decode(self, tokens: list[int]) -> None:
        bt, lc = self.batch, self.lc
        bt.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            bt.token[i], bt.pos[i], bt.n_seq_id[i], bt.logits[i] = int(t), self.pos + i, 1, i == len(tokens) - 1
            bt.seq_id[i][0] = 0
        if lc.llama_decode(self.ctx, bt) != 0:
            raise RuntimeError("llama_decode failed")
        self.pos += len(tokens)

    def begin(self, text: str, seed: int) -> None:
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)
        self.pos, self.frames = 0, []
        self.sampler = StreamSampler(SamplingParams(seed=seed, **SAMPLING), self.n_codebooks)
        self._decode(self.bundle.prompt.tokens(self.tokenizer, tok.check_text(text), None))

    def next_frame(self) -> np.ndarray:
        lay, lc = self.lay, self.lc
        codes = np.zeros(self.n_codebooks, np.int64)
        for j in range(self.n_codebooks):
            lo, hi = lay.logits_offset + lay.allowed[j][0], lay.logits_offset + lay.allowed[j][1]
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            codes[j] = self.sampler.sample(np.array(logits[lo:hi]), j)
            self._decode([lay.token_id(j, int(codes[j]))])
        self.sampler.end_frame(codes)
        self.frames.append(codes)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Orpheus' window: the last 4 frames decoded, samples [2048, 4096) kept (none before 4 frames)."""
        if len(self.frames) < WINDOW_FRAMES:
            return np.zeros(0, np.float32)
        window = np.stack(self.frames[-WINDOW_FRAMES:], axis=1)[None]  # [1, 7, 4]
        pcm = self.codec.run({self.codec.input_names[0]: np.ascontiguousarray(window)})
        return np.array(next(iter(pcm.values()))[0, self.hop:2 * self.hop])

    def close(self) -> None:
        if self.ctx is not None:
            self.lc.llama_batch_free(self.batch)
            self.lc.llama_free(self.ctx)
            self.lc.llama_model_free(self.model)
            self.ctx = None
