"""The streaming codec decoder on ONNX Runtime (a `CodecDecoder` for the codec worker).

Jobs with the same frame count are decoded in one graph call: their states are
gathered into preallocated staging rows and scattered back after. The PCM of
each job is copied once out of the graph's output buffer into an array the
caller owns.
"""
from __future__ import annotations

import numpy as np

from ...contract.bundle import Bundle
from ...runtime.codec_worker import DecodeJob
from .graph import OrtGraph


class OrtCodecDecoder:
    """`codec_decode` of a bundle, batched over streams, for up to max_batch x max_frames."""

    def __init__(self, bundle: Bundle, max_batch: int, max_frames: int, threads: int | None = 1):
        self.g = OrtGraph(bundle, "codec_decode", {"batch": max_batch, "frames": max_frames}, threads)
        self.K = bundle.constants.n_codebooks
        self.max_batch, self.max_frames = max_batch, max_frames
        self.state_shapes = [tuple(s["shape"]) for s in self.g.state]
        self.codes = np.zeros(max_batch * self.K * max_frames, np.int64)
        self.staging = [np.zeros((max_batch, *shape), np.float32) for shape in self.state_shapes]

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
