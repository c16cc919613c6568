"""The published families' own pipelines, as `FrameSource`s for `cadenza bench --baselines reference`.

They load the checkpoint (and codec) the bundle was exported from (`manifest["source"]`)
with the families' own classes and drive them the way the families' own code does:

- Orpheus: transformers' `LlamaForCausalLM` one token at a time with its KV cache
  (`DynamicCache`), then SNAC the way Orpheus' streaming decoder does it: once 4 frames
  (28 tokens) exist, after every new frame re-decode the last 4 frames and emit samples
  [2048, 4096) of them; frame 0 and the last two frames are never emitted, and SNAC's
  noise blocks stay on (as in Orpheus).
- CSM: transformers' `CsmForConditionalGeneration` (backbone, `lm_head`, depth decoder with
  its own cache per frame), then `MimiModel.decode` of every frame at the end, as
  `generate` + `decode` does.

Every token is sampled with the bench's sampling (`SAMPLING`) among the ids the engine may
sample at that position (the same work for every engine; a random model sampled over its
whole vocabulary would emit no audio at all).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cadenza.engine.contract.bundle import Bundle
from cadenza.engine.runtime.pacing import ChunkSchedule

from .measure import SAMPLING


class _TorchSource:
    """What both families share: the bundle's constants, torch threads, a seeded sampler."""

    def __init__(self, bundle: str | Path, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.bundle = b = Bundle.load(bundle, verify=False)
        c = b.constants
        self.sample_rate, self.hop, self.frame_rate, self.n_codebooks = c.sample_rate, c.hop, c.frame_rate, c.n_codebooks
        from cadenza.export.families.checkpoint import CheckpointError, resolve

        try:  # the directory it was exported from, or a hub id (the hub cache serves it offline)
            self.checkpoint = str(resolve(b.manifest["source"]["checkpoint"], "the checkpoint the bundle was exported from"))
        except CheckpointError as e:
            raise ValueError(f"the reference baseline loads the bundle's own checkpoint: {e}") from None

    def sample(self, logits, lo: int, hi: int) -> int:
        """Temperature / top-k / top-p sampling among logits[lo:hi] with torch's RNG; returns the index in it."""
        torch = self.torch
        x = logits[lo:hi].float() / SAMPLING["temperature"]
        k = SAMPLING["top_k"] or x.numel()
        top, idx = x.topk(min(k, x.numel()))
        probs = torch.softmax(top, dim=-1)
        return int(idx[torch.multinomial(probs, 1, generator=self.gen)])

    def close(self) -> None:
        self.model = None


class OrpheusReference(_TorchSource):
    name = "reference"

    def __init__(self, bundle: str | Path, threads: int):
        super().__init__(bundle, threads)
        from snac import SNAC
        from transformers import AutoTokenizer, LlamaForCausalLM

        from cadenza.export.families import orpheus as fam
        from cadenza.export.families.checkpoint import resolve

        self.fam = fam
        self.model = LlamaForCausalLM.from_pretrained(self.checkpoint).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        codec = resolve(self.bundle.manifest["source"]["codec"], "the SNAC codec")
        self.snac = SNAC.from_pretrained(str(codec)).eval()

    def schedule(self, frames: int) -> ChunkSchedule:
        return ChunkSchedule(first=1, growth=1.0, max_frames=1)  # Orpheus decodes after every frame

    def begin(self, text: str, seed: int) -> None:
        fam, torch = self.fam, self.torch
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        prompt = [fam.START_OF_HUMAN, fam.BOS, *ids, fam.EOT_ID, fam.END_OF_HUMAN, fam.START_OF_AI,
                  fam.START_OF_SPEECH]
        self.gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.out = self.model(input_ids=torch.tensor([prompt]), use_cache=True)
        self.tokens: list[int] = []

    def next_frame(self) -> np.ndarray:
        fam, torch = self.fam, self.torch
        codes = []
        with torch.no_grad():
            for j in range(7):
                lo = fam.AUDIO_BASE + j * fam.CODEBOOK
                code = self.sample(self.out.logits[0, -1], lo, lo + fam.CODEBOOK)
                codes.append(code)
                self.tokens.append(lo + code)
                self.out = self.model(input_ids=torch.tensor([[lo + code]]), past_key_values=self.out.past_key_values,
                                      use_cache=True)
        return np.asarray(codes, np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Orpheus' sliding window: the last 28 tokens decoded, samples [2048, 4096) kept."""
        from cadenza.export.families.snac import split_levels

        torch = self.torch
        n = len(self.tokens) // 7
        if n < 4:
            return np.zeros(0, np.float32)
        window = np.array(self.tokens[-28:]).reshape(4, 7).T - self.fam.AUDIO_BASE - np.arange(7)[:, None] * 4096
        with torch.no_grad():
            audio = self.snac.decode(split_levels(torch.as_tensor(window)[None]))  # [1, 1, 8192]
        return audio[0, 0, 2048:4096].numpy().copy()


class CsmReference(_TorchSource):
    name = "reference"

    def __init__(self, bundle: str | Path, threads: int):
        super().__init__(bundle, threads)
        from transformers import AutoTokenizer, CsmForConditionalGeneration

        self.model = CsmForConditionalGeneration.from_pretrained(self.checkpoint).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        self.C = self.model.codec_model.config.codebook_size

    def schedule(self, frames: int) -> ChunkSchedule:
        return ChunkSchedule(first=frames, growth=1.0, max_frames=frames)  # generate, then decode once

    def begin(self, text: str, seed: int) -> None:
        from cadenza.export.families import csm as fam

        torch, m = self.torch, self.model
        prompt = [fam.BOS, *self.tokenizer(f"[0]{text}", add_special_tokens=False).input_ids, fam.EOS_TEXT]
        self.gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            out = m.backbone_model(inputs_embeds=m.embed_text_tokens(torch.tensor([prompt])), use_cache=True)
        self.h, self.cache = out.last_hidden_state[:, -1], out.past_key_values

    def next_frame(self) -> np.ndarray:
        torch, m, C, K = self.torch, self.model, self.C, self.n_codebooks
        with torch.no_grad():
            codes = [self.sample(m.lm_head(self.h)[0], 0, C)]
            d = m.depth_decoder(input_ids=torch.tensor([[0, codes[0]]]), backbone_last_hidden_state=self.h,
                                use_cache=True)
            for k in range(1, K):
                codes.append(self.sample(d.logits[0, -1], 0, C))
                if k < K - 1:
                    d = m.depth_decoder(input_ids=torch.tensor([[codes[-1]]]), past_key_values=d.past_key_values,
                                        use_cache=True, logits_to_keep=1)
            out = m.backbone_model(inputs_embeds=m.backbone_model.embed_tokens(torch.tensor([[codes]])),
                                   past_key_values=self.cache, use_cache=True)
        self.h, self.cache = out.last_hidden_state[:, -1], out.past_key_values
        return np.asarray(codes, np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            return self.model.codec_model.decode(torch.as_tensor(codes)[None]).audio_values[0, 0].numpy().copy()


FAMILY_REFERENCES = {"orpheus": OrpheusReference, "csm": CsmReference}
