"""The streaming codec decoder on the torch backend: its own CUDA stream, double-buffered pinned output.

`TorchCodecDecoder.submit(codes, states)` queues one chunk's decode on the
decoder's stream and returns at once; `result(ticket)` waits for that chunk's
PCM on the host. Two device output buffers and two pinned host buffers
alternate (llm.c's `device_to_file` pattern): while chunk N's PCM copies out
on the copy stream, chunk N + 1 decodes on the decode stream. Events order it:

    decode stream:  wait(copied[i]) -> decode -> dev_pcm[i] -> record(decoded[i])
    copy stream:    wait(decoded[i]) -> host_pcm[i] <- dev_pcm[i] -> record(copied[i])
    host:           result(i) waits copied[i]

Ownership:
- `result(ticket)` returns a numpy view of pinned buffer i: valid until the
  second `submit` after the ticket's own (which reuses buffer i); copy to keep it.
  Asking for a ticket whose buffer was reused raises.
- `states` (per-stream decoder state, a list of device tensors [G, C, N]) stay
  the caller's; they are updated in place on the decode stream, so touch them
  from another stream only after `result()` of that chunk (or `synchronize()`).
- `codes` may be freed by the caller as soon as `submit` returns.

On the CPU the decode is plain and synchronous, with the same buffers and contract.
`TorchBatchDecoder` adapts it to the codec worker (the runtime's `CodecDecoder`,
numpy `DecodeJob`s): a call with several groups of jobs submits group i + 1
before it reads group i, so one group's copy-out overlaps the next one's decode;
a call with a single group (one stream, or streams of one chunk length) waits
for it, and its states cross to the host after each chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...runtime.codec_worker import CodecState


@dataclass(frozen=True)
class Ticket:
    seq: int  # submit number
    buf: int  # which of the two buffers
    batch: int
    samples: int  # per row


class TorchCodecDecoder:
    """Streaming decode of `codec` (a `cadenza.export.codec.Codec`) for up to max_batch x max_frames."""

    def __init__(self, codec, device: str | torch.device, max_batch: int, max_frames: int,
                 dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.codec = codec.to(self.device, dtype).eval().requires_grad_(False)
        self.dtype, self.hop = dtype, codec.cfg.hop
        self.max_batch, self.max_frames = max_batch, max_frames
        n = max_batch * max_frames * self.hop
        self.cuda = self.device.type == "cuda"
        self.dev_pcm = [torch.zeros(n, device=self.device) for _ in range(2)] if self.cuda else None
        self.host_pcm = [torch.zeros(n, pin_memory=self.cuda) for _ in range(2)]
        if self.cuda:
            self.stream, self.copy_stream = torch.cuda.Stream(self.device), torch.cuda.Stream(self.device)
            self.decoded = [torch.cuda.Event() for _ in range(2)]
            self.copied = [torch.cuda.Event() for _ in range(2)]
        self.seq = 0

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        """Fresh decoder states for `batch` streams: device tensors [batch, C, N] (caller-owned)."""
        return [torch.zeros(batch, c, n, device=self.device, dtype=self.dtype)
                for c, n in self.codec.decoder.state_shapes()]

    @torch.no_grad()
    def submit(self, codes, states: list[torch.Tensor]) -> Ticket:
        """Queue the decode of codes [G, K, F] (numpy or tensor) with `states` (updated in place)."""
        codes = torch.as_tensor(np.asarray(codes, np.int64) if not isinstance(codes, torch.Tensor) else codes)
        G, _, F = codes.shape
        if G > self.max_batch or F > self.max_frames:
            raise ValueError(f"submit: codes {tuple(codes.shape)} exceed max_batch={self.max_batch} / "
                             f"max_frames={self.max_frames}; split the batch or build a larger decoder")
        i, m = self.seq % 2, G * F * self.hop
        ticket = Ticket(self.seq, i, G, F * self.hop)
        self.seq += 1
        if not self.cuda:
            pcm, new = self.codec.decode_stream(codes, states)
            for s, t in zip(states, new):
                s.copy_(t)
            self.host_pcm[i][:m] = pcm.reshape(-1).float()
            return ticket
        codes = codes.to(self.device, non_blocking=True)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # codes and states are ready
        codes.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(self.copied[i])  # dev_pcm[i] is free once its last copy-out ran
            pcm, new = self.codec.decode_stream(codes, states)
            for s, t in zip(states, new):
                s.copy_(t)
            self.dev_pcm[i][:m].copy_(pcm.reshape(-1))
            self.decoded[i].record(self.stream)
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(self.decoded[i])
            self.host_pcm[i][:m].copy_(self.dev_pcm[i][:m], non_blocking=True)
            self.copied[i].record(self.copy_stream)
        return ticket

    def result(self, ticket: Ticket) -> np.ndarray:
        """float32 [G, F * hop]: a view of pinned buffer `ticket.buf` (valid until two submits later)."""
        if ticket.seq < self.seq - 2:
            raise RuntimeError(f"result: ticket {ticket.seq}'s buffer was reused by submit {ticket.seq + 2}; "
                               "read each result before the second submit after it")
        if self.cuda:
            self.copied[ticket.buf].synchronize()
        m = ticket.batch * ticket.samples
        return self.host_pcm[ticket.buf][:m].numpy().reshape(ticket.batch, ticket.samples)

    def synchronize(self) -> None:
        """Wait for every queued decode and copy (then `states` may be used anywhere)."""
        if self.cuda:
            self.stream.synchronize()
            self.copy_stream.synchronize()

    @torch.no_grad()
    def decode_offline(self, codes) -> np.ndarray:
        """All frames codes [G, K, F] from zero state, in one call: float32 [G, F * hop] (caller-owned)."""
        codes = torch.as_tensor(np.asarray(codes, np.int64)).to(self.device)
        pcm, _ = self.codec.decode_stream(codes, self.zero_states(codes.shape[0]))  # zero state on our device
        return pcm.float().cpu().numpy()


class TorchBatchDecoder:
    """The runtime's `CodecDecoder` over a `TorchCodecDecoder` (job states stay numpy `CodecState`s)."""

    def __init__(self, decoder: TorchCodecDecoder):
        self.dec = decoder
        self.state_shapes = [tuple(shape) for shape in decoder.codec.decoder.state_shapes()]

    def new_state(self) -> CodecState:
        return CodecState.zeros(self.state_shapes)

    def decode(self, jobs) -> list[np.ndarray]:
        F = jobs[0].codes.shape[1]
        if F == 0:
            return [np.zeros(0, np.float32) for _ in jobs]
        if F > self.dec.max_frames:  # an offline decode: one job at a time, states through the plain call
            return [self._direct(j) for j in jobs]
        groups = [jobs[i:i + self.dec.max_batch] for i in range(0, len(jobs), self.dec.max_batch)]
        out: list[np.ndarray] = []
        queued = [self._submit(groups[0])]
        for i in range(len(groups)):
            if i + 1 < len(groups):  # double buffering: decode group i + 1 while group i copies out
                queued.append(self._submit(groups[i + 1]))
            out += self._collect(groups[i], *queued[i])
        return out

    def _states(self, jobs) -> list[torch.Tensor]:
        d = self.dec
        return [torch.as_tensor(np.concatenate([j.state.arrays[s] for j in jobs])).to(d.device, d.dtype)
                for s in range(len(self.state_shapes))]  # [G, C, N] each

    @torch.no_grad()
    def _submit(self, jobs) -> tuple:
        states = self._states(jobs)
        return self.dec.submit(np.stack([j.codes for j in jobs]), states), states  # codes [G, K, F]

    def _collect(self, jobs, ticket, states) -> list[np.ndarray]:
        pcm = self.dec.result(ticket)
        self._write_back(jobs, states)
        return [pcm[g].copy() for g in range(len(jobs))]  # caller-owned

    @torch.no_grad()
    def _direct(self, job) -> np.ndarray:
        d = self.dec
        pcm, states = d.codec.decode_stream(torch.as_tensor(job.codes[None]).to(d.device), self._states([job]))
        self._write_back([job], states)
        return pcm[0].float().cpu().numpy()

    @staticmethod
    def _write_back(jobs, states) -> None:
        for s, st in enumerate(states):
            host = st.float().cpu().numpy()
            for g, job in enumerate(jobs):
                job.state.arrays[s][0] = host[g]

    def close(self) -> None:
        self.dec.synchronize()
