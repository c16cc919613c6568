"""Random-weight checkpoints shaped like Orpheus, SNAC 24 kHz and CSM, written to local dirs.

`make_orpheus`, `make_snac` and `make_csm` build models with the families' own classes and the
real vocabularies, special-token ids, rates and hop sizes, so loaders, exporters and streaming
code can be tested and benchmarked without Hugging Face hub access. Sizes:

- `tiny`: seconds, tens of MB (the tests);
- `cpu`: a ~150-200M backbone with the real vocabulary, and the real codec config (benchmarks);
- `real`: the published architecture (csm-1b: ~1.6B parameters; Orpheus: Llama-3.2-3B).

    python -m cadenza.benchmarks.random_checkpoints --family orpheus --size cpu --out ckpt/orpheus
    python -m cadenza.benchmarks.random_checkpoints --family csm --size cpu --out ckpt/csm

Needs the [export] extra (torch, transformers, snac, tokenizers).
"""

from __future__ import annotations

import copy
import json
import os

import torch
from snac import SNAC
from transformers import CsmConfig, CsmForConditionalGeneration, LlamaConfig, LlamaForCausalLM

from .random_tokenizers import csm_tokenizer, orpheus_tokenizer

LLAMA3_ROPE = {
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "high_freq_factor": 4.0,
    "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
}

ORPHEUS_TINY = dict(
    vocab_size=156940, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=131072,
    rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128009,
    pad_token_id=128263,
)

# hubertsiuzdak/snac_24khz, except the two widths marked tiny.
SNAC_24KHZ = dict(
    sampling_rate=24000, encoder_dim=48, encoder_rates=[2, 4, 8, 8], decoder_dim=1024,
    decoder_rates=[8, 8, 4, 2], attn_window_size=None, codebook_size=4096, codebook_dim=8,
    vq_strides=[4, 2, 1], noise=True, depthwise=True,
)
SNAC_TINY = dict(SNAC_24KHZ, encoder_dim=8, decoder_dim=32)
ORPHEUS_SIZES = {
    "tiny": ORPHEUS_TINY,
    "cpu": dict(ORPHEUS_TINY, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=12, num_key_value_heads=4, head_dim=64),
    "real": dict(ORPHEUS_TINY, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                 num_attention_heads=24, num_key_value_heads=8, head_dim=128),
}

# Mimi shaped like kyutai/mimi (hop 1920, 12.5 Hz, sliding window 250) with tiny widths.
MIMI_TINY = dict(
    model_type="mimi", sampling_rate=24000, hidden_size=32, num_filters=4,
    upsampling_ratios=[8, 6, 5, 4], kernel_size=7, last_kernel_size=3, residual_kernel_size=3,
    dilation_growth_rate=2, num_residual_layers=1, compress=2, codebook_size=2048,
    codebook_dim=16, vector_quantization_hidden_dimension=16, num_quantizers=32,
    num_semantic_quantizers=1, upsample_groups=32, num_hidden_layers=2, intermediate_size=64,
    num_attention_heads=4, num_key_value_heads=4, head_dim=8, max_position_embeddings=8000,
    sliding_window=250, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    use_causal_conv=True, trim_right_ratio=1.0, pad_mode="constant",
)


def make_orpheus(out_dir: str, seed: int = 0, size: str = "tiny") -> str:
    """Write a random Orpheus checkpoint (Llama backbone + Orpheus tokenizer).

    Args:
        out_dir: directory to create/overwrite (config.json, model.safetensors,
            generation_config.json, tokenizer.json, tokenizer_config.json).
        seed: torch seed for the random weights.
        size: "tiny", "cpu" or "real" (`ORPHEUS_SIZES`).

    Returns:
        out_dir.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(rope_parameters=dict(LLAMA3_ROPE), **ORPHEUS_SIZES[size])
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    orpheus_tokenizer(config.vocab_size).save_pretrained(out_dir)
    return out_dir


@torch.no_grad()
def calibrate_snac_output(model: SNAC, seed: int, target_std: float = 0.3) -> None:
    """Rescale SNAC's last conv so the pre-tanh signal has mean 0 and std `target_std`, in place.

    With PyTorch's default init the random decoder's output sits deep in the tanh's saturation
    (the tiny one at about -0.93 +- 0.02), which makes parity tests nearly vacuous. The last conv
    `y = g * v/|v| * x + b` becomes `k * (y - mean)` with `k = target_std / std`, measured on random
    codes with the noise blocks bypassed.

    Args:
        model: a `snac.SNAC`.
        seed: seed of the random calibration codes.
        target_std: wanted std of the pre-tanh signal.
    """
    gen = torch.Generator().manual_seed(seed)
    codes = [torch.randint(0, model.codebook_size, (1, 8 * 4 // s), generator=gen)
             for s in model.vq_strides]
    x = model.quantizer.from_codes(codes)
    layers = list(model.decoder.model)
    for layer in layers[:-2]:
        x = _run_without_noise(layer, x)
    last = layers[-2]
    y = last(x)
    k = target_std / y.std().item()
    last.parametrizations.weight.original0.mul_(k)
    last.bias.copy_((last.bias - y.mean()) * k)


def _run_without_noise(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run one decoder layer, skipping snac's NoiseBlocks (random) if it contains any."""
    if not hasattr(layer, "block"):
        return layer(x)
    for sub in layer.block:
        if type(sub).__name__ != "NoiseBlock":
            x = sub(x)
    return x


def make_snac(out_dir: str, seed: int = 0, config: dict | None = None, calibrate: bool = True) -> str:
    """Write a random SNAC checkpoint loadable by `SNAC.from_pretrained(out_dir)`.

    Args:
        out_dir: directory to create (config.json + pytorch_model.bin).
        seed: torch seed for the random weights.
        config: SNAC kwargs; default `SNAC_TINY` (pass `SNAC_24KHZ` for the real shapes).
        calibrate: rescale the last conv out of tanh saturation (`calibrate_snac_output`).

    Returns:
        out_dir.
    """
    config = copy.deepcopy(config or SNAC_TINY)
    torch.manual_seed(seed)
    model = SNAC(**config).eval()
    if calibrate:
        calibrate_snac_output(model, seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    torch.save(model.state_dict(), os.path.join(out_dir, "pytorch_model.bin"))
    return out_dir


def csm_config(size: str = "tiny", num_codebooks: int = 32) -> CsmConfig:
    """CSM config: csm-1b's shapes ("real"), a CPU-sized one with the real vocabularies and the real
    Mimi ("cpu"), or a tiny one with the same vocabularies and ids ("tiny").

    Args:
        size: "tiny", "cpu" or "real" (csm-1b: backbone 2048x16, depth 1024x4, kyutai/mimi codec).
        num_codebooks: K (tiny config only; the others use 32).

    Returns:
        a `CsmConfig`.
    """
    if size == "real":
        mimi = {"model_type": "mimi", "num_quantizers": 32}
        depth = {"rope_parameters": dict(LLAMA3_ROPE)}
        return CsmConfig(rope_parameters=dict(LLAMA3_ROPE), depth_decoder_config=depth,
                         codec_config=mimi)
    if size == "cpu":
        depth = dict(num_codebooks=32, backbone_hidden_size=768, vocab_size=2051, hidden_size=512,
                     intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                     head_dim=64, max_position_embeddings=33, rope_parameters=dict(LLAMA3_ROPE))
        return CsmConfig(num_codebooks=32, vocab_size=2051, text_vocab_size=128256, hidden_size=768,
                         intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                         head_dim=64, max_position_embeddings=2048, rope_parameters=dict(LLAMA3_ROPE),
                         depth_decoder_config=depth, codec_config={"model_type": "mimi", "num_quantizers": 32})
    depth = dict(
        num_codebooks=num_codebooks, backbone_hidden_size=64, vocab_size=2051, hidden_size=32,
        intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, max_position_embeddings=num_codebooks + 1, rope_parameters=dict(LLAMA3_ROPE),
    )
    mimi = dict(MIMI_TINY, num_quantizers=num_codebooks)
    return CsmConfig(
        num_codebooks=num_codebooks, vocab_size=2051, text_vocab_size=128256, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, max_position_embeddings=2048, rope_parameters=dict(LLAMA3_ROPE),
        depth_decoder_config=depth, codec_config=mimi,
    )


@torch.no_grad()
def randomize_mimi_extras(mimi: torch.nn.Module, generator: torch.Generator,
                          qk_std: float = 0.3) -> None:
    """Give Mimi's non-trained-by-init state useful random values, in place.

    transformers' `_init_weights` zeroes every codebook (`embed_sum`), which would make every code
    decode to the same latent and every encode return code 0, and sets the transformer layer scales
    to 0.01, which hides the transformer; std-0.02 query/key weights make every attention
    nearly uniform, so a wrong window would barely show. This draws random codebooks / usages,
    layer scales in [0.2, 1] and query/key weights with std `qk_std` (peaked attention).

    Args:
        mimi: a transformers `MimiModel`.
        generator: torch generator (seeded by the caller).
        qk_std: std of the q_proj / k_proj weights.
    """
    for name, buf in mimi.named_buffers():
        if name.endswith("codebook.embed_sum"):
            buf.copy_(torch.randn(buf.shape, generator=generator))
        elif name.endswith("codebook.cluster_usage"):
            buf.copy_(torch.rand(buf.shape, generator=generator) * 1.5 + 0.5)
    for name, param in mimi.named_parameters():
        if name.endswith("layer_scale.scale"):
            param.copy_(torch.rand(param.shape, generator=generator) * 0.8 + 0.2)
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            param.copy_(torch.randn(param.shape, generator=generator) * qk_std)
    for module in mimi.modules():
        if hasattr(module, "_embed"):
            module._embed = None  # drop the cached codebook so it is recomputed


@torch.no_grad()
def calibrate_mimi_output(mimi: torch.nn.Module, generator: torch.Generator,
                          target_std: float = 0.2) -> None:
    """Rescale Mimi's last conv so random codes decode to mean 0, std `target_std`, in place.

    Random Mimi weights decode to audio with an RMS of about 6 (Mimi has no output tanh), which
    would make absolute tolerances meaningless. The last conv `y = w * x + b` becomes
    `k * (y - mean)` with `k = target_std / std`, measured on 8 frames of random codes.

    Args:
        mimi: a transformers `MimiModel`.
        generator: torch generator for the calibration codes.
        target_std: wanted output std.
    """
    cfg = mimi.config
    codes = torch.randint(0, cfg.codebook_size, (1, cfg.num_quantizers, 8), generator=generator)
    audio = mimi.decode(codes).audio_values
    last = mimi.decoder.decoder_seanet.layers[-1].conv
    k = target_std / audio.std().item()
    last.weight.mul_(k)
    last.bias.copy_((last.bias - audio.mean()) * k)


def make_csm(out_dir: str, seed: int = 0, size: str = "tiny", num_codebooks: int = 32) -> str:
    """Write a random CSM checkpoint (backbone + depth decoder + Mimi codec + tokenizer).

    Args:
        out_dir: directory to create (config.json, generation_config.json, model.safetensors
            [sharded for real shapes], tokenizer.json, tokenizer_config.json).
        seed: torch seed for the random weights.
        size: "tiny", "cpu" or "real" (csm-1b's architecture: ~1.6B params, ~7.4 GB RAM, ~6.6 GB disk).
        num_codebooks: K for the tiny config.

    Returns:
        out_dir.
    """
    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(csm_config(size, num_codebooks)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    randomize_mimi_extras(model.codec_model, gen)
    calibrate_mimi_output(model.codec_model, gen)
    model.save_pretrained(out_dir, safe_serialization=True)
    csm_tokenizer().save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="write a random-weight checkpoint of a published TTS family")
    p.add_argument("--family", required=True, choices=["orpheus", "snac", "csm"])
    p.add_argument("--size", default="tiny", choices=["tiny", "cpu", "real"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.family == "snac":
        make_snac(a.out, a.seed, SNAC_TINY if a.size == "tiny" else SNAC_24KHZ)
    elif a.family == "orpheus":
        make_orpheus(a.out, a.seed, a.size)
    else:
        make_csm(a.out, a.seed, a.size)
    print(a.out)


if __name__ == "__main__":
    main()
