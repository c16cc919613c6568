"""The Python API: `Engine.load(bundle)` -> `engine.stream(text)` -> chunks of PCM.

Example:
    >>> from cadenza.engine import Engine
    >>> with Engine.load("bundles/tiny") as engine:
    ...     for chunk in engine.stream("Hello there.", seed=0):
    ...         play(chunk.pcm, chunk.sample_rate)

The reference model family has random weights: the audio exercises the engine
at realistic shapes, but it is not speech.
"""
from __future__ import annotations

import numbers
import os
import queue
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import text as tok
from .backend import get_backend
from .bundle import Bundle
from .codec_stream import BatchDecoder, CodecState, CodecWorker
from .errors import EngineClosed, KVCacheExhausted
from .generator import Generator, Row
from .kv_cache import CacheShape
from .metrics import StreamMetrics
from .prefix_cache import Prefix, PrefixCache
from .sampler import SamplingParams, StreamSampler
from .scheduler import Scheduler
from .stream import ChunkSchedule, Request, Stream
from .voice_library import VoiceLibrary
from .voices import Voice, VoiceStore


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
    """A loaded bundle with its KV cache, scheduler and codec worker. Thread-safe."""

    def __init__(self, bundle: Bundle, backend: str = "ort", *, max_streams: int = 4, max_len: int | None = None,
                 memory_budget_mb: float = 1024, threads: int | None = None, codec_threads: int = 1,
                 chunk: ChunkSchedule | None = None, max_queue: int = 64, queue_timeout: float = 30.0,
                 prefix_cache_mb: float = 64, prefill_budget: int = 512, warmup: bool = True,
                 voice_store: VoiceStore | str | Path | None = None):
        c = bundle.manifest["constants"]
        self.bundle, self.backend_name = bundle, backend
        self.sample_rate, self.hop, self.frame_rate = c["sample_rate"], c["hop"], c["frame_rate"]
        self.n_codebooks, self.speaker_dim = c["n_codebooks"], c["speaker_dim"]
        self.max_len = int(max_len or c["max_seq_len"])
        if not 8 <= self.max_len <= c["max_seq_len"]:
            raise ValueError(f"max_len must be in [8, {c['max_seq_len']}] (the model's context), got {self.max_len}")
        self.slots = self._slots(c, max_streams, memory_budget_mb)
        self.chunk = chunk or ChunkSchedule()
        threads = threads or self.default_threads(bundle)
        self._closed = False
        self.gen = self.worker = self.scheduler = self._voices = None
        try:  # whatever fails half-way, close what was opened
            self.gen, be = self._open_generator(bundle, backend, threads)
            self.codec_graph, decoder = self._open_codec(bundle, backend, be, codec_threads)
            self.worker = CodecWorker(decoder)
            cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None
            self.scheduler = Scheduler(self.gen, self.worker, self.sample_rate, self.hop, max_queue, queue_timeout,
                                       cache, prefill_budget)
            # the voice encoders run on ONNX Runtime; they open no graph until a voice is added
            self._voices = VoiceLibrary(bundle, "ort" if backend.startswith("torch") else backend, voice_store)
            if warmup:
                self._warmup()
        except BaseException:
            self.close()
            raise

    def _open_generator(self, bundle: Bundle, backend: str, threads: int):
        """The batched generator for `backend`, and the ONNX Runtime backend for the codec."""
        if backend in ("torch", "torch-cuda"):  # the PyTorch model from weights/; torch is imported only here
            from .torch_backend import TorchGenerator

            device = "cuda" if backend == "torch-cuda" else "cpu"
            return TorchGenerator(bundle, self.slots, self.max_len, device, threads=threads), get_backend("ort")
        be = get_backend(backend)
        return Generator(bundle, be, self.slots, self.max_len, threads), be

    def _open_codec(self, bundle: Bundle, backend: str, be, codec_threads: int):
        """(what CodecState.zeros reads the state shapes from, the batch decoder for the worker)."""
        if backend == "torch-cuda":  # the codec on the GPU too, on its own stream
            from .torch_codec import TorchBatchDecoder, TorchCodecDecoder

            decoder = TorchBatchDecoder(TorchCodecDecoder(self.gen.model.codec, "cuda", self.slots,
                                                          self.chunk.max_frames))
            return decoder, decoder
        graph = be.open(bundle, "codec_decode", {"batch": self.slots, "frames": self.chunk.max_frames}, codec_threads)
        return graph, BatchDecoder(graph, self.slots, self.n_codebooks, self.chunk.max_frames)

    @classmethod
    def load(cls, bundle: str | Path | Bundle, backend: str = "ort", **kwargs) -> "Engine":
        """Load a bundle (checked against its manifest hashes) and start the engine.

        Args:
            bundle: the bundle directory (from `cadenza export`).
            backend: "ort" (ONNX Runtime, CPU; the default), "torch" (PyTorch eager from the bundle's
                weights; the reference), "torch-cuda" (CUDA graphs, on-device sampling; needs a GPU).
            max_streams: concurrent streams (KV slots), capped by `memory_budget_mb`.
            max_len: KV positions per slot (default: the model's context).
            threads: intra-op threads for generation (default: `default_threads`: 1 for tiny graphs,
                all cores for larger ones).
            chunk: the chunk schedule (first chunk small, then growing).
            max_queue, queue_timeout: the bounded wait queue for a free slot.
            prefix_cache_mb: bytes for cached voice-prefix KV entries (0 disables the cache).
            prefill_budget: prompt tokens prefilled between two decode steps while streams run
                (new streams beyond it wait one step, so running streams do not stall).
            voice_store: the voice store directory (default: the user's data directory).
            warmup: run one short stream at load, so the first caller's time-to-first-audio does
                not pay for first-run allocations.
        """
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        return cls(b, backend, **kwargs)

    def _slots(self, c: dict, max_streams: int, budget_mb: float) -> int:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        per = CacheShape(c["backbone_layers"], c["kv_heads"], c["head_dim"], self.max_len).slot_bytes
        fit = int(budget_mb * 2**20 // per)
        if fit < 1:
            raise KVCacheExhausted(f"one KV slot of max_len={self.max_len} needs {per / 2**20:.1f} MiB, more than "
                                   f"memory_budget_mb={budget_mb}; raise the budget or lower max_len")
        return min(max_streams, fit)

    def _max_segment_bytes(self, prefix_len: int = 1) -> int:
        """The longest text (in bytes) whose prefix, prompt and frame cap fit one slot."""
        lo, hi = 0, self.max_len
        while lo < hi:
            mid = (lo + hi + 1) // 2
            _, cap = tok.frame_bounds("x" * mid, self.frame_rate)
            lo, hi = (mid, hi) if prefix_len + mid + 2 + cap <= self.max_len else (lo, mid - 1)
        return lo

    # --- streams --------------------------------------------------------------
    def stream(self, text: str, voice=None, *, frames: int | None = None, sampling: SamplingParams | None = None,
               **sampling_kwargs) -> Stream:
        """Start synthesising `text`; iterate the returned `Stream` for `Chunk`s.

        Args:
            text: any length; long text is split at sentence / clause boundaries.
            voice: None (neutral), a stored voice's name, a `.safetensors` voice file, a `Voice`,
                or a speaker embedding [E].
            frames: force exactly this many frames (benchmarks); the text must fit one segment.
            sampling / **sampling_kwargs: `SamplingParams` or its fields
                (seed, temperature, top_k, top_p, repetition_penalty, greedy).
        Raises:
            TextError, KVCacheExhausted, SamplingError, EngineBusy, EngineClosed.
        """
        if sampling is not None and sampling_kwargs:
            raise TypeError(f"give either sampling=SamplingParams(...) or keyword arguments, not both "
                            f"({sorted(sampling_kwargs)})")
        params = sampling or SamplingParams(**sampling_kwargs)
        req = self._request(text, voice, frames, params)
        self.scheduler.submit(req)
        return Stream(req, self.scheduler, self.sample_rate)

    def astream(self, text: str, voice=None, **kwargs):
        """The asyncio twin of `stream`: `async for chunk in engine.astream(...)`."""
        return self.stream(text, voice, **kwargs).__aiter__()

    def synthesize(self, text: str, voice=None, **kwargs) -> Synthesis:
        """The whole waveform at once (streamed internally)."""
        s = self.stream(text, voice, **kwargs)
        pcm = s.read_all()
        return Synthesis(pcm, self.sample_rate, s.codes, s.metrics.summary())

    def _request(self, text: str, voice, frames: int | None, params: SamplingParams) -> Request:
        if isinstance(voice, (str, os.PathLike, Voice)):
            voice = self._voices.resolve(voice)  # a stored voice keeps its acoustic prompt
        emb = self._voice(voice)
        prefix = self._prefix(voice, emb)
        if frames is None:
            segments = tok.split_text(text, self._max_segment_bytes(prefix.length))
        else:  # an exact length (benchmarks): one segment, which must fit with its frames
            if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
                raise ValueError(f"frames must be a positive int, got {frames!r}")
            segments = [tok.check_text(text)]
        prompts = [tok.prompt_tokens(s, with_voice=False) for s in segments]
        frames = None if frames is None else int(frames)
        bounds = [(frames, frames) if frames else tok.frame_bounds(s, self.frame_rate) for s in segments]
        for p, (_, cap) in zip(prompts, bounds):
            if prefix.length + len(p) + cap > self.max_len:
                what = f"frames={frames} keeps the text in one segment: " if frames else ""
                raise KVCacheExhausted(
                    f"{what}a voice prefix of {prefix.length} plus a prompt of {len(p)} tokens plus {cap} frames "
                    f"exceeds max_len={self.max_len}; raise max_len, shorten the text or lower frames")
        metrics = StreamMetrics(self.sample_rate, self.frame_rate, self.n_codebooks, segments=len(segments),
                                seed=params.seed)
        row = Row(StreamSampler(params, self.n_codebooks), forced=frames is not None)
        return Request(prompts, bounds, emb, prefix, row, CodecState.zeros(self.codec_graph), metrics, self.chunk)

    @staticmethod
    def _prefix(voice, emb: np.ndarray) -> Prefix:
        """The voice's prompt prefix: its embedding slot, plus transcript and frames for an acoustic prompt."""
        return Prefix.for_voice(emb, getattr(voice, "prompt_codes", None), getattr(voice, "transcript", None))

    def _voice(self, voice) -> np.ndarray:
        """None (neutral), an embedding [E], a `Voice`, or a stored name / .safetensors path (checked
        against this bundle's family and hash; VoiceError if it was made with another bundle)."""
        if voice is None:
            return np.zeros(self.speaker_dim, np.float32)
        if isinstance(voice, (str, os.PathLike, Voice)):
            voice = self._voices.resolve(voice)
        emb = getattr(voice, "embedding", voice)
        emb = np.asarray(emb, np.float32).reshape(-1)
        if emb.shape != (self.speaker_dim,) or not np.isfinite(emb).all():
            raise ValueError(f"a voice embedding must be {self.speaker_dim} finite floats, got shape {emb.shape}")
        return emb

    # --- utilities --------------------------------------------------------------
    def _warmup(self) -> None:
        """One 2-frame greedy stream through every graph of the decode loop (and the codec)."""
        self.synthesize("Hi.", frames=2, greedy=True)  # 6 prompt positions + 2 frames: fits max_len >= 8


    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Offline decode of all frames [K, F] at once (from zero state): float32 [F * hop].

        Runs on the codec worker (the only user of the decoder graph's buffers)."""
        from .codec_stream import DecodeJob

        if self._closed:
            raise EngineClosed("the engine is closed; load it again")
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self.n_codebooks or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers shaped [{self.n_codebooks}, frames], got {codes.dtype} {codes.shape}")
        box: queue.Queue = queue.Queue()
        self.worker.submit(DecodeJob(np.ascontiguousarray(codes, np.int64), CodecState.zeros(self.codec_graph),
                                     box.put))
        out = box.get()
        if isinstance(out, BaseException):
            raise out
        return out

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
        costs more than it saves), every core once a step's weights are large enough to share."""
        step_bytes = bundle.graph_path("backbone_step").stat().st_size
        return 1 if step_bytes < 32 * 2**20 else (os.cpu_count() or 1)
