"""Backbone steps on three engines over the same weights: Cadenza, llama.cpp, ORT-GenAI.

Each engine holds B rows and a fixed token per row; `prefill(tokens [B, P])` starts every row
at P cached positions, `step()` advances every row by one position (one call for the batch),
`logits()` reads the compared columns of the last call ([B, n]). Token t is vocabulary id t of
the converted checkpoint, which is row t of the bundle's embedding table (`peer_convert`).

- `CadenzaSteps`: the engine's own step path: `Stack.run` of the ORT backend (the backbone
  graph with its KV-cache views bound as past and present, written in place), fed as
  `OrtGenerator._step` feeds it; where the layout cuts its head per frame position, the
  step also runs `head.{j}` (j cycling) on the hidden state, as a flat frame does.
- `LlamaCppSteps`: llama-cpp-python's C API, one `llama_decode` of B tokens (one per sequence),
  logits for every row; the context's defaults otherwise (f16 KV cache).
- `GenAISteps`: `onnxruntime_genai.Generator.generate_next_token()` (greedy), its session
  with the same intra-op threads and spinning off.

Every engine runs in its own spawned process (`EngineProcess`): imports, thread pools and a
crash (llama.cpp's SIGILL where a build uses AMX the VM does not enable) stay there.
llama.cpp's process gets OMP_WAIT_POLICY=PASSIVE, so its OpenMP workers sleep rather than
spin between kernels, as ONNX Runtime's do with spinning off.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import traceback

import numpy as np

from .peer_convert import PeerError

ENGINES = ("cadenza", "llama.cpp", "ort-genai")


class CadenzaSteps:
    def __init__(self, bundle: str, batch: int, threads: int, length: int, columns: tuple[int, int]):
        from cadenza.engine.backends.ort.generator import Stack
        from cadenza.engine.backends.ort.graph import OrtGraph
        from cadenza.engine.contract.bundle import Bundle

        b = Bundle.load(bundle, verify=False)
        B, E = batch, b.embedding.slots
        dims = {"batch": B, "seq": length, "cache_len": length, "depth_len": 1}
        self.stack = Stack(b, "backbone", B, length, dims, threads, False)
        ranges = getattr(b.layout, "heads", ()) or ()
        self.heads = [OrtGraph(b, f"head.{j}", {"batch": B}, threads, False) for j in range(len(ranges))]
        self.col0 = b.layout.logits_offset + (ranges[0][0] if ranges else 0)
        self.columns = columns
        self.null = b.embedding.null_row
        self.ids = np.full((B, 1, E), self.null, np.int64)
        self.seqlens = np.zeros(B, np.int32)
        self.ones = np.ones(B, np.int32)
        names = self.stack.graph.input_names
        self.voice = np.zeros((B, b.constants.speaker_dim), self.stack.dtype) if "voice" in names else None
        self.B, self.pos, self.j, self.out = B, 0, 0, None

    def _feeds(self, ids, seqlens_k, query_seqlens) -> dict:
        f = {"ids": ids, "seqlens_k": seqlens_k, "query_seqlens": query_seqlens}
        if self.voice is not None:
            f["voice"] = self.voice
        return f

    def set_tokens(self, tokens: np.ndarray) -> None:
        self.ids[:, 0, 0] = tokens

    def prefill(self, tokens: np.ndarray) -> None:
        B, P = tokens.shape
        ids = np.full((B, P, self.ids.shape[2]), self.null, np.int64)
        ids[:, :, 0] = tokens
        self.out = self.stack.run(self._feeds(ids, np.full(B, P - 1, np.int32), np.full(B, P, np.int32)), 0, B)
        self.pos, self.j = P, 0
        self._head()

    def step(self) -> None:
        self.seqlens[:] = self.pos
        self.out = self.stack.run(self._feeds(self.ids, self.seqlens, self.ones), 0, self.B)
        self.pos += 1
        self._head()

    def _head(self) -> None:
        if self.heads:  # a flat frame's position j samples from head.{j}
            self.head_out = self.heads[self.j % len(self.heads)].run({"hidden": self.out["hidden"]})["logits"]
            self.j += 1

    def logits(self) -> np.ndarray:
        """Columns [lo, hi) (vocabulary ids) of the last call: from the backbone's logits, whose column 0
        is id `logits_offset`, or from head.0 (a cut head) where the layout has them."""
        lo, hi = self.columns
        if self.heads:  # compared: columns of head.0's range (the parent picks columns inside it)
            full = self.heads[0].run({"hidden": self.out["hidden"]})["logits"]
        else:
            full = self.out["logits"]
        return np.array(full[:, lo - self.col0:hi - self.col0], np.float32)

    def close(self) -> None:
        self.stack.close()


_LOG_CALLBACK = None


def quiet(lc) -> None:
    """llama.cpp's log lines dropped (the callback is kept alive for the process's life)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        import ctypes

        _LOG_CALLBACK = lc.llama_log_callback(lambda level, text, user: None)
        lc.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


class LlamaCppSteps:
    def __init__(self, gguf: str, batch: int, threads: int, length: int, columns: tuple[int, int]):
        import llama_cpp as lc

        self.lc, self.B, self.columns = lc, batch, columns
        quiet(lc)
        lc.llama_backend_init()
        mp = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(gguf.encode(), mp)
        if not self.model:
            raise PeerError(f"llama.cpp could not load {gguf}")
        cp = lc.llama_context_default_params()
        cp.n_ctx = length * batch
        cp.n_batch = cp.n_ubatch = max(512, length)
        cp.n_seq_max = batch
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(max(512, length) * batch, 0, batch)
        self.tokens = np.zeros(batch, np.int64)
        self.pos, self.n_out = 0, 0

    def _decode(self, items) -> None:  # (token, pos, seq, logits?)
        bt = self.batch
        bt.n_tokens = len(items)
        for i, (t, p, s, want) in enumerate(items):
            bt.token[i], bt.pos[i], bt.n_seq_id[i], bt.logits[i] = int(t), int(p), 1, want
            bt.seq_id[i][0] = s
        rc = self.lc.llama_decode(self.ctx, bt)
        if rc != 0:
            raise PeerError(f"llama_decode returned {rc}")
        self.out_index = [i for i, it in enumerate(items) if it[3]]

    def set_tokens(self, tokens: np.ndarray) -> None:
        self.tokens[:] = tokens

    def prefill(self, tokens: np.ndarray) -> None:
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)
        B, P = tokens.shape
        for s in range(B):  # one decode per row (a row's prompt fits n_batch; all rows may not)
            self._decode([(tokens[s, p], p, s, p == P - 1) for p in range(P)])
        self.pos = P

    def step(self) -> None:
        self._decode([(self.tokens[s], self.pos, s, True) for s in range(self.B)])
        self.pos += 1

    def logits(self) -> np.ndarray:
        lo, hi = self.columns
        rows = []
        for i in self.out_index:
            ptr = self.lc.llama_get_logits_ith(self.ctx, i)
            rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))[lo:hi].copy())
        return np.stack(rows)

    def close(self) -> None:
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)


class GenAISteps:
    def __init__(self, path: str, batch: int, threads: int, length: int, columns: tuple[int, int]):
        import onnxruntime_genai as og

        self.og, self.B, self.length, self.columns = og, batch, length, columns
        cfg = og.Config(path)
        so = {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "allow_spinning": "0"}
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": so}}}))
        self.model = og.Model(cfg)
        self.gen, self.tokens, self.pos = None, None, 0

    def set_tokens(self, tokens: np.ndarray) -> None:
        self.tokens = np.asarray(tokens, np.int32)[:, None]

    def prefill(self, tokens: np.ndarray) -> None:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.length, batch_size=self.B, do_sample=False)
        self.gen = self.og.Generator(self.model, params)
        self.gen.append_tokens(np.asarray(tokens, np.int32))
        self.pos = tokens.shape[1]

    def step(self) -> None:
        """Timing: GenAI's own decode step (greedy: its argmax picks the next token)."""
        self.gen.generate_next_token()
        self.pos += 1

    def feed(self) -> None:
        """Agreement: the fixed tokens appended, so every engine sees the same ids."""
        self.gen.append_tokens(self.tokens)
        self.pos += 1

    def logits(self) -> np.ndarray:
        lo, hi = self.columns
        return np.array(self.gen.get_logits(), np.float32).reshape(self.B, -1)[:, lo:hi]

    def close(self) -> None:
        self.gen = self.model = None


FACTORIES = {"cadenza": CadenzaSteps, "llama.cpp": LlamaCppSteps, "ort-genai": GenAISteps}


# ------------------------------------------------------------------------------------- in the child
class _Timer:
    """Rows at `ctx` positions; `time(warm, n)` steps on, back to `ctx` (untimed) before passing `ctx + window`."""

    def __init__(self, engine, prompt: np.ndarray, step_tokens: np.ndarray, window: int):
        self.e, self.prompt, self.window = engine, prompt, window
        engine.set_tokens(step_tokens)
        engine.prefill(prompt)

    def time(self, warm: int, n: int) -> list[float]:
        e = self.e
        if e.pos + warm + n > self.prompt.shape[1] + self.window:
            e.prefill(self.prompt)
        for _ in range(warm):
            e.step()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            e.step()
            out.append(time.perf_counter() - t0)
        return out


def agree(engine, prompt: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Logits [S + 1, n] (batch 1): at the prompt's last position, then after each fixed token of `steps`."""
    engine.prefill(prompt[None])
    out = [engine.logits()[0]]
    for t in steps:
        engine.set_tokens(np.array([t]))
        (engine.feed if hasattr(engine, "feed") else engine.step)()
        out.append(engine.logits()[0])
    return np.stack(out)


def _serve(kind: str, kwargs: dict, conn) -> None:
    if kind == "llama.cpp":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before libgomp loads with llama_cpp
    engine = timer = None
    try:
        while True:
            cmd, *args = conn.recv()
            if cmd == "close":
                break
            if cmd == "open":
                if engine is not None:
                    engine.close()
                engine, timer = None, None
                engine = FACTORIES[kind](**{**kwargs, "batch": args[0]})
                res = None
            elif cmd == "agree":
                res = agree(engine, *args)
            elif cmd == "prepare":
                timer = _Timer(engine, *args)
                res = None
            else:  # "time"
                res = timer.time(*args)
            conn.send(("ok", res))
    except BaseException as e:  # noqa: BLE001 - sent to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))
    finally:
        if engine is not None:
            engine.close()


class EngineProcess:
    """One engine in a spawned process: `open(batch)`, `agree(...)`, `prepare(...)`, `time(warm, n)`."""

    def __init__(self, kind: str, **kwargs):
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(kind, kwargs, child), name=f"peer-{kind}", daemon=True)
        self.proc.start()
        child.close()

    def _call(self, *msg):
        self.conn.send(msg)
        while not self.conn.poll(0.2):
            if not self.proc.is_alive():
                raise PeerError(self._death())
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise PeerError(self._death()) from None
        if status == "error":
            raise PeerError(f"{self.kind}: {value}")
        return value

    def _death(self) -> str:
        self.proc.join(timeout=5)
        code = self.proc.exitcode
        if code == -signal.SIGILL:
            from .peer_setup import cmake_args

            return (f"{self.kind} died with SIGILL (an instruction this CPU or VM does not run): a llama.cpp built "
                    "natively uses AMX where the CPU advertises it, and this VM does not enable it. Rebuild "
                    "llama-cpp-python without AMX: python -m cadenza.benchmarks.peer_setup (CMAKE_ARGS="
                    f"\"{cmake_args()}\")")
        return f"the {self.kind} process died (exit code {code}); out of memory?"

    def open(self, batch: int) -> None:
        self._call("open", batch)

    def agree(self, prompt: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return self._call("agree", prompt, steps)

    def prepare(self, prompt: np.ndarray, step_tokens: np.ndarray, window: int) -> None:
        self._call("prepare", prompt, step_tokens, window)

    def time(self, warm: int, n: int) -> list[float]:
        return self._call("time", warm, n)

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.conn.send(("close",))
                self.proc.join(timeout=20)
        except (BrokenPipeError, OSError):
            pass
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)
