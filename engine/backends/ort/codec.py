"""The codec decoders on ONNX Runtime (the runtime's `CodecDecoder`, for the codec worker).

`OrtCodecDecoder` (a stateful, causal codec: the reference family, Mimi): jobs with the
same frame count are decoded in one graph call; their states are gathered into
preallocated staging rows and scattered back after.

`OrtWindowDecoder` (a stateless, non-causal codec: SNAC): each stream keeps its recent
frames; a frame is decoded once `right` later frames exist (or the stream ended),
inside a window with `left` frames of context before it, so a chunk equals the
same frames of one offline decode when the window covers the decoder's receptive
field. Jobs whose windows have the same length are decoded in one call.

The PCM of each job is copied once out of the graph's output buffer into an array the
caller owns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...contract.bundle import Bundle
from ...runtime.codec_worker import CodecState, DecodeJob
from .graph import DTYPES, OrtGraph


class OrtCodecDecoder:
    """`codec_decode` with carried state, batched over streams, for up to max_batch x max_frames."""

    def __init__(self, bundle: Bundle, max_batch: int, max_frames: int, threads: int | None = 1):
        self.g = OrtGraph(bundle, "codec_decode", {"batch": max_batch, "frames": max_frames}, threads)
        self.K = bundle.constants.n_codebooks
        self.max_batch, self.max_frames = max_batch, max_frames
        self.state_shapes = [tuple(s["shape"]) for s in self.g.state]
        self.state_dtypes = [DTYPES[s.get("dtype", "float32")] for s in self.g.state]
        self.codes = np.zeros(max_batch * self.K * max_frames, np.int64)
        self.staging = [np.zeros((max_batch, *shape), dt) for shape, dt in zip(self.state_shapes, self.state_dtypes)]

    def new_state(self) -> CodecState:
        return CodecState.zeros(self.state_shapes, self.state_dtypes)

    def decode(self, jobs: list[DecodeJob]) -> list[np.ndarray]:
        """Decode jobs that share one frame count; their states are updated in place."""
        if jobs[0].codes.shape[1] == 0:  # an end marker: nothing to decode
            return [np.zeros(0, np.float32) for _ in jobs]
        if jobs[0].codes.shape[1] > self.max_frames:  # longer than the staging rows: one at a time
            return [self._decode_group([j], own=True)[0] for j in jobs]
        out: list[np.ndarray] = []
        for i in range(0, len(jobs), self.max_batch):
            out += self._decode_group(jobs[i:i + self.max_batch])
        return out

    def _decode_group(self, jobs: list[DecodeJob], own: bool = False) -> list[np.ndarray]:
        G, F = len(jobs), jobs[0].codes.shape[1]
        if own:
            codes = np.ascontiguousarray(jobs[0].codes[None])
            states = list(jobs[0].state.arrays)
        else:
            codes = self.codes[: G * self.K * F].reshape(G, self.K, F)
            states = [st[:G] for st in self.staging]
            for g, job in enumerate(jobs):
                codes[g] = job.codes
                for dst, src in zip(states, job.state.arrays):
                    dst[g] = src[0]
        feeds = {self.g.input_names[0]: codes}
        feeds.update({s["input"]: a for s, a in zip(self.g.state, states)})
        out = self.g.run(feeds)
        pcm = out[self.g.output_names[0]]  # [G, F * hop], owned by the graph
        for g, job in enumerate(jobs):
            for arr, s in zip(job.state.arrays, self.g.state):
                arr[0] = out[s["output"]][g]
        return [pcm[g].copy() for g in range(G)]  # caller-owned copies

    def close(self) -> None:
        self.g.close()


@dataclass
class WindowState:
    """One stream's recent frames for a windowed decoder."""

    codes: np.ndarray  # [K, n]: the frames kept, from stream frame `first` on
    first: int = 0
    emitted: int = 0  # frames whose audio went out


class OrtWindowDecoder:
    """A stateless `codec_decode` run over windows of `left` + frames + `right` (see the module doc)."""

    def __init__(self, bundle: Bundle, max_batch: int, max_frames: int, threads: int | None = 1):
        spec = bundle.codec
        self.left, self.right = spec.left, spec.right
        self.K, self.hop = bundle.constants.n_codebooks, bundle.constants.hop
        self.g = OrtGraph(bundle, "codec_decode",
                          {"batch": max_batch, "frames": self.left + max_frames + self.right}, threads)
        self.max_batch = max_batch

    def new_state(self) -> WindowState:
        return WindowState(np.zeros((self.K, 0), np.int64))

    def decode(self, jobs: list[DecodeJob]) -> list[np.ndarray]:
        """Append each job's frames; decode, per stream, the frames that now have their right context."""
        plans = [self._plan(j) for j in jobs]
        out: list[np.ndarray | None] = [None] * len(jobs)
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(plans):
            if p is None:
                out[i] = np.zeros(0, np.float32)
            else:
                by_len.setdefault(p[1].shape[1], []).append(i)
        for idx in by_len.values():  # windows of one length: one call per max_batch of them
            for lo in range(0, len(idx), self.max_batch):
                group = idx[lo:lo + self.max_batch]
                codes = np.ascontiguousarray(np.stack([plans[i][1] for i in group]))  # [G, K, W]
                pcm = self.g.run({self.g.input_names[0]: codes})[self.g.output_names[0]]  # [G, W * hop]
                for g, i in enumerate(group):
                    cut, n = plans[i][0], plans[i][2]
                    out[i] = pcm[g, cut * self.hop:(cut + n) * self.hop].copy()
        return out

    def _plan(self, job: DecodeJob):
        """(offset of the first emitted frame in the window, the window [K, W], frames emitted), or None."""
        st: WindowState = job.state
        st.codes = np.concatenate([st.codes, job.codes], axis=1)
        available = st.first + st.codes.shape[1]
        end = available if job.final else max(st.emitted, available - self.right)
        n = end - st.emitted
        if n <= 0:
            return None
        w0, w1 = max(st.first, st.emitted - self.left), min(available, end + self.right)
        window = st.codes[:, w0 - st.first:w1 - st.first]
        cut = st.emitted - w0
        st.emitted = end
        keep = max(st.first, st.emitted - self.left)  # what the next window can still need
        st.codes, st.first = st.codes[:, keep - st.first:], keep
        return cut, window, n

    def close(self) -> None:
        self.g.close()
