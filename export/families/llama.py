"""A family's Llama-style decoder stack as Cadenza's `Transformer` (the exported KV contract).

Orpheus' backbone (`LlamaModel`) and CSM's backbone and depth decoder
(`CsmBackboneModel`, `CsmDepthDecoderModel`) are the same decoder: RMSNorm,
rotary embeddings on the rotate-half layout, grouped-query attention (query
head h reads kv head h // groups), SwiGLU. `from_hf` builds a
`cadenza.export.model.transformer.Transformer` of the same shape, copies the
weights by the explicit table `TENSOR_NAMES`, and takes the rotary inverse
frequencies from the family's own rotary module (so llama3 frequency scaling is
exactly the family's). The weights are shared with the family's module, not copied (a 1B
model is exported in the memory of one copy). What the family's module does differently is
refused.
"""
from __future__ import annotations

import torch

from ..model.config import TransformerConfig
from ..model.transformer import Transformer
from .checkpoint import CheckpointError

# checkpoint tensor (per layer i, under the family's decoder module) -> Cadenza's tensor
TENSOR_NAMES = {
    "layers.{i}.self_attn.q_proj.weight": "layers.{i}.attn.q_proj.weight",
    "layers.{i}.self_attn.k_proj.weight": "layers.{i}.attn.k_proj.weight",
    "layers.{i}.self_attn.v_proj.weight": "layers.{i}.attn.v_proj.weight",
    "layers.{i}.self_attn.o_proj.weight": "layers.{i}.attn.o_proj.weight",
    "layers.{i}.mlp.gate_proj.weight": "layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.mlp.up_proj.weight": "layers.{i}.mlp.up_proj.weight",
    "layers.{i}.mlp.down_proj.weight": "layers.{i}.mlp.down_proj.weight",
    "layers.{i}.input_layernorm.weight": "layers.{i}.attn_norm.weight",
    "layers.{i}.post_attention_layernorm.weight": "layers.{i}.mlp_norm.weight",
    "norm.weight": "norm.weight",
}


def config_of(hf_config, max_seq_len: int) -> TransformerConfig:
    """Cadenza's `TransformerConfig` for a Llama-style config; CheckpointError for what it cannot run."""
    c = hf_config
    dim, heads = c.hidden_size, c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or dim // heads
    if head_dim * heads != dim:
        raise CheckpointError(f"head_dim {head_dim} x {heads} heads != hidden size {dim}: Cadenza's attention needs "
                              "hidden_size = heads x head_dim")
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise CheckpointError("attention or MLP biases are not supported (attention_bias / mlp_bias)")
    if getattr(c, "hidden_act", "silu") != "silu":
        raise CheckpointError(f"activation {c.hidden_act!r} is not supported (SwiGLU with silu only)")
    return TransformerConfig(dim=dim, n_layers=c.num_hidden_layers, n_heads=heads,
                             n_kv_heads=c.num_key_value_heads, ffn_dim=c.intermediate_size,
                             norm_eps=c.rms_norm_eps, max_seq_len=max_seq_len)


@torch.no_grad()
def from_hf(decoder: torch.nn.Module, hf_config, max_seq_len: int) -> Transformer:
    """A `Transformer` with the weights of `decoder` (a family's decoder module, e.g. `LlamaModel`)."""
    cfg = config_of(hf_config, max_seq_len)
    with torch.device("meta"):  # no memory for weights that are about to be replaced
        body = Transformer(cfg).eval()
    theirs = decoder.state_dict()
    ours = {}
    for i in range(cfg.n_layers):
        for src, dst in TENSOR_NAMES.items():
            ours[dst.format(i=i)] = _take(theirs, src.format(i=i))
    missing, unexpected = body.load_state_dict(ours, strict=False, assign=True)  # shares the family's tensors
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint's decoder does not map onto Cadenza's: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    rotary = decoder.rotary_emb
    if float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        raise CheckpointError(f"rotary type {rotary.rope_type!r} scales attention; only frequency-scaling types "
                              "(default, llama3) are supported")
    for layer in body.layers:
        layer.attn.inv_freq = rotary.inv_freq.detach().float().clone()
    return body


def _take(state: dict, name: str) -> torch.Tensor:
    if name not in state:
        raise CheckpointError(f"the checkpoint has no tensor {name!r}; is it the family's architecture?")
    return state[name].float()
