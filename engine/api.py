"""The Python API: `Engine.load(bundle)` -> `engine.stream(text)` -> chunks of PCM.

Example:
    >>> from cadenza.engine import Engine
    >>> with Engine.load("bundles/tiny") as engine:
    ...     for chunk in engine.stream("Hello there.", seed=0):
    ...         play(chunk.pcm, chunk.sample_rate)

`Engine` only wires the parts together and checks the caller's arguments: a
backend from the registry opens the generator and codec decoder, the codec
worker and scheduler run them, `RequestBuilder` turns a call into a `Request`,
and `engine.voices` resolves and makes voices.
"""
from __future__ import annotations

import os
import queue
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import get_backend
from .contract.bundle import Bundle
from .contract.constants import ModelConstants
from .errors import EngineClosed, KVCacheExhausted, VoiceError
from .runtime.codec_worker import CodecWorker, DecodeJob
from .runtime.kv_cache import CacheShape
from .runtime.metrics import StreamMetrics
from .runtime.pacing import ChunkPacer, ChunkSchedule
from .runtime.prefix_cache import PrefixCache
from .runtime.generator import Row
from .runtime.request import RequestBuilder, VoicePrompt
from .runtime.sampler import SamplingParams, StreamSampler
from .runtime.scheduler import Scheduler
from .runtime.stream import Stream, StreamState
from .voices.library import VoiceLibrary
from .voices.store import VoiceStore
from .voices.voice import Voice


@dataclass
class Synthesis:
    """A whole waveform with its codes and metrics."""

    pcm: np.ndarray  # float32 [N]
    sample_rate: int
    codes: np.ndarray  # [K, F]
    metrics: dict

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate


class Engine:
    """A loaded bundle with its KV cache, scheduler and codec worker. Thread-safe (see `load`)."""

    def __init__(self, bundle: Bundle, backend: str = "ort", *, max_streams: int = 4, max_len: int | None = None,
                 memory_budget_mb: float = 1024, threads: int | None = None, codec_threads: int = 1,
                 chunk: ChunkSchedule | None = None, max_queue: int = 64, queue_timeout: float = 30.0,
                 prefix_cache_mb: float = 64, prefill_budget: int = 512, warmup: bool = True,
                 voice_store: VoiceStore | str | Path | None = None, spinning: bool = False):
        spec, c = get_backend(backend), bundle.constants
        self.bundle, self.backend, self.constants = bundle, spec.name, c
        self.sample_rate, self.hop, self.frame_rate, self.n_codebooks = c.sample_rate, c.hop, c.frame_rate, c.n_codebooks
        self.max_len = int(max_len or c.max_seq_len)
        if not 8 <= self.max_len <= c.max_seq_len:
            raise ValueError(f"max_len must be in [8, {c.max_seq_len}] (the model's context), got {self.max_len}")
        self.slots = slots_within(c, self.max_len, max_streams, memory_budget_mb, spec.kv_itemsize or bundle.kv_itemsize)
        self.chunk = chunk or ChunkSchedule()
        self._builder = RequestBuilder(bundle, self.max_len)
        self._closed = False
        self.scheduler = self.worker = self.gen = self._voices = None
        try:  # whatever fails half-way, close what was opened
            opened = spec.open(bundle, slots=self.slots, max_len=self.max_len,
                               threads=threads or self.default_threads(bundle), codec_threads=codec_threads,
                               max_frames=self.chunk.max_frames, spinning=spinning)
            self.gen = opened.generator
            self.worker = CodecWorker(opened.codec)
            self._codec = opened.codec
            cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None
            self.scheduler = Scheduler(self.gen, self.worker, self.sample_rate, self.hop, max_queue=max_queue,
                                       queue_timeout=queue_timeout, prefix_cache=cache, prefill_budget=prefill_budget)
            self._voices = VoiceLibrary(bundle, voice_store)
            if warmup:  # first-run allocations of every graph of the decode loop, not the first caller's
                self.synthesize("Hi.", frames=2, greedy=True)
        except BaseException:
            self.close()
            raise

    @classmethod
    def load(cls, bundle: str | Path | Bundle, backend: str = "ort", *, trusted_keys=None, **kwargs) -> "Engine":
        """Load a bundle (checked against its manifest hashes) and start the engine.

        Args:
            bundle: the bundle directory (from `cadenza export`).
            backend: a registered backend: "ort" (ONNX Runtime, CPU; the default), "torch"
                (PyTorch eager from the bundle's weights; the reference), "torch-cuda" (CUDA
                graphs, on-device sampling; needs a GPU). See `cadenza.engine.backends`.
            max_streams: concurrent streams (KV slots), capped by `memory_budget_mb`.
            max_len: KV positions per slot (default: the model's context).
            threads: intra-op threads for generation (default: `default_threads`).
            spinning: let ONNX Runtime's intra-op threads spin between kernels (`ort` backend). Off by
                default: the codec worker decodes on the second core beside generation, and spinning
                threads take that core (measured: docs/benchmarks.md, "Threads and spinning").
            chunk: the chunk schedule (first chunk small, then growing).
            max_queue, queue_timeout: the bounded wait queue for a free slot.
            prefix_cache_mb: bytes for cached voice-prefix KV entries (0 disables the cache).
            prefill_budget: prompt tokens prefilled between two decode steps while streams run.
            voice_store: the voice store directory (default: the user's data directory).
            warmup: run one short stream at load, so the first caller's time-to-first-audio does
                not pay for first-run allocations.
            trusted_keys: Ed25519 public keys (PEM bytes or files); if given (or $CADENZA_TRUSTED_KEYS
                is set), the bundle must be signed by one of them (`cadenza bundle sign`).
        """
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, trusted_keys=trusted_keys)
        return cls(b, backend, **kwargs)

    # --- streams --------------------------------------------------------------
    def stream(self, text, voice=None, *, frames: int | None = None, sampling: SamplingParams | None = None,
               feed_rules=None, **sampling_kwargs) -> Stream:
        """Start synthesising `text`; iterate the returned `Stream` for `Chunk`s.

        Args:
            text: a str of any length (long text is split at sentence / clause boundaries), or an
                iterable or async iterable of str pieces (incremental text, e.g. an LLM's output):
                speech starts at the first clause boundary (`runtime/text_feed.py`; an async
                iterable needs a running event loop in this thread).
            voice: None (the family's default voice), a built-in voice (`engine.voices.builtin`:
                Orpheus names, CSM speaker ids), a stored voice's name, a `.safetensors` voice
                file, a `Voice`, or (reference family) a speaker embedding [E].
            frames: force exactly this many frames (benchmarks); the text must fit one segment.
            feed_rules: `FeedRules` for incremental text (where segments are released).
            sampling / **sampling_kwargs: `SamplingParams` or its fields
                (seed, temperature, top_k, top_p, repetition_penalty, greedy); unset fields
                take the family's defaults.
        Raises:
            TextError, KVCacheExhausted, SamplingError, VoiceError, EngineBusy, EngineClosed.
        """
        if sampling is not None and sampling_kwargs:
            raise TypeError(f"give either sampling=SamplingParams(...) or keyword arguments, not both "
                            f"({sorted(sampling_kwargs)})")
        params = sampling or self.sampling_params(**sampling_kwargs)
        if not isinstance(text, str) and (hasattr(text, "__iter__") or hasattr(text, "__aiter__")):
            from .runtime.text_feed import open_fed_stream

            if frames is not None:
                raise ValueError("frames=N needs the whole text as one str, not an iterable of pieces")
            return open_fed_stream(self, text, self._voice_prompt(voice), params, feed_rules)
        req = self._builder.build(text, self._voice_prompt(voice), frames, params)
        st = self._new_state(req, params)
        self.scheduler.submit(st)
        return Stream(st, self.scheduler, self.sample_rate)

    def _new_state(self, req, params: SamplingParams) -> StreamState:
        return StreamState(req, Row(StreamSampler(params, self.n_codebooks), forced=req.forced),
                           self._codec.new_state(),
                           ChunkPacer(self.chunk, self.hop / self.sample_rate, self.bundle.codec.lookahead),
                           StreamMetrics(self.sample_rate, self.frame_rate, self.n_codebooks,
                                         segments=len(req.segments), seed=params.seed), self.n_codebooks)

    def astream(self, text, voice=None, **kwargs):
        """The asyncio twin of `stream`: `async for chunk in engine.astream(...)`."""
        return self.stream(text, voice, **kwargs).__aiter__()

    def synthesize(self, text: str, voice=None, **kwargs) -> Synthesis:
        """The whole waveform at once (streamed internally)."""
        s = self.stream(text, voice, **kwargs)
        pcm = s.read_all()
        return Synthesis(pcm, self.sample_rate, s.codes, s.metrics.summary())

    def sampling_params(self, **kwargs) -> SamplingParams:
        """`SamplingParams` from the family's defaults (the bundle's `sampling` block) and `kwargs`.
        With `greedy=True` the default repetition penalty is left out (greedy is plain argmax)."""
        defaults = dict(self.bundle.sampling_defaults)
        if kwargs.get("greedy"):
            defaults.pop("repetition_penalty", None)
        return SamplingParams(**{**defaults, **kwargs})

    def _voice_prompt(self, voice) -> VoicePrompt:
        """None (the family's default), a built-in voice or speaker id, a stored name / voice file /
        `Voice` (checked against this bundle; VoiceError if it was made with another), or an
        embedding [E] for the reference family."""
        if voice is None:
            return self._builder.neutral_voice()
        builtin = self._voices.builtin_prompt(voice)
        if builtin is not None:
            return builtin
        if isinstance(voice, (str, os.PathLike, Voice)):
            v = self._resolve_stored(voice)
            return VoicePrompt(v.embedding if self.constants.speaker_dim else None, v.meta.get("speaker"),
                               v.prompt_codes, v.transcript)
        if not self.constants.speaker_dim:
            raise VoiceError(f"this {self.bundle.family} model takes no speaker embedding; give a built-in voice "
                             f"({', '.join(self._voices.builtin) or 'none'}) or a stored voice's name")
        emb = np.asarray(voice, np.float32).reshape(-1)
        if emb.shape != (self.constants.speaker_dim,) or not np.isfinite(emb).all():
            raise ValueError(f"a voice embedding must be {self.constants.speaker_dim} finite floats, "
                             f"got shape {emb.shape}")
        return VoicePrompt(emb)

    def _resolve_stored(self, voice) -> Voice:
        try:
            return self._voices.resolve(voice)
        except VoiceError as e:
            if isinstance(voice, str) and self._voices.builtin and "no voice named" in str(e):
                raise VoiceError(f"{voice!r} is neither one of this model's voices ({', '.join(self._voices.builtin)})"
                                 f" nor a stored voice; {e}") from None
            raise

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Offline decode of all frames [K, F] at once (from zero state): float32 [F * hop].

        Runs on the codec worker (the only user of the decoder's buffers)."""
        if self._closed:
            raise EngineClosed("the engine is closed; load it again")
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self.n_codebooks or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers shaped [{self.n_codebooks}, frames], got {codes.dtype} {codes.shape}")
        box: queue.Queue = queue.Queue()
        self.worker.submit(DecodeJob(np.ascontiguousarray(codes, np.int64), self._codec.new_state(), box.put,
                                     final=True))
        out = box.get()
        if isinstance(out, BaseException):
            raise out
        return out

    # --- state --------------------------------------------------------------------
    @property
    def voices(self) -> VoiceLibrary:
        """Cloned voices: `engine.voices.add("me.wav", "me")`, then `engine.stream(text, voice="me")`.

        Also `list()`, `get(name)`, `remove(name)`; the store is the `voice_store` given to the
        engine (default: the user's data directory)."""
        return self._voices

    @property
    def active_streams(self) -> int:
        return self.scheduler.active

    def close(self) -> None:
        """Stop the scheduler and the codec worker; running streams end with EngineClosed."""
        if not self._closed:
            self._closed = True
            for part in (self.scheduler, self.worker, self.gen, self._voices):  # in dependency order
                if part is not None:
                    part.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def default_threads(bundle: Bundle) -> int:
        """Intra-op threads for generation: one for small graphs (waking a pool for every tiny op
        costs more than it saves), every core once a step's weights (its graph file plus any
        external data) are large enough to share."""
        return 1 if bundle.weight_bytes["backbone"] < 32 * 2**20 else (os.cpu_count() or 1)


def slots_within(c: ModelConstants, max_len: int, max_streams: int, budget_mb: float, itemsize: int) -> int:
    """KV slots: `max_streams`, capped by what fits `budget_mb` at `itemsize` bytes per cache element."""
    if max_streams < 1:
        raise ValueError(f"max_streams must be >= 1, got {max_streams}")
    per = CacheShape(c.backbone_layers, c.kv_heads, c.head_dim, max_len).slot_bytes(itemsize)
    fit = int(budget_mb * 2**20 // per)
    if fit < 1:
        raise KVCacheExhausted(f"one KV slot of max_len={max_len} needs {per / 2**20:.1f} MiB, more than "
                               f"memory_budget_mb={budget_mb}; raise the budget or lower max_len")
    return min(max_streams, fit)
