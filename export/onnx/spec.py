"""What one exported graph is: its module, named inputs and outputs, KV and state tensors.

Each `GraphSpec` names its inputs and outputs (the manifest copies them, so
the engine never hard-codes a tensor name), their symbolic dims and dtypes,
the per-layer KV-cache tensors and the streaming state tensors. Every family's
exporter builds its graphs from these.

KV contract: per layer `l`, a transformer graph reads `past_key.{l}` /
`past_value.{l}` [B, Hkv, T, Dh] (masked by each row's valid length) and either
returns only `new_key.{l}` / `new_value.{l}` [B, Hkv, P, Dh] for the engine to
write (`mode: returned`, portable graphs), or writes them itself into
`present_key.{l}` / `present_value.{l}`, which the engine binds to the very
buffers of the past (`mode: in_place`, fused graphs). Per-layer inputs over a
layer-major cache ([L, 2, S, Hkv, T, Dh]) make a batch of consecutive slots a
zero-copy contiguous view, and no graph slices a whole-cache tensor (which
ONNX Runtime would copy every step).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

INT, FLOAT = "int64", "float32"


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list  # ints, symbolic dim names, or "name*N" / "name/N" derived from one

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class GraphSpec:
    role: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example: tuple
    kv: dict | None = None  # {"layers", "kv_heads", "head_dim", "mode", "dtype", "past_key", "past_value", "out_key", "out_value"}
    state: list[dict] = field(default_factory=list)  # [{"input", "output", "shape"}]
    extra: dict = field(default_factory=dict)  # further manifest entries (embedding addressing, prime)


def kv_specs(n_layers: int, hkv: int, dh: int, t_dim: str, p_dim, in_place: bool = False, dtype: str = FLOAT):
    """(past inputs, new / present outputs, the manifest's kv entry) of a transformer with the KV contract."""
    out = "present" if in_place else "new"
    past, new = [], []
    for l in range(n_layers):
        for kind in ("key", "value"):
            past.append(TensorSpec(f"past_{kind}.{l}", dtype, ["batch", hkv, t_dim, dh]))
            new.append(TensorSpec(f"{out}_{kind}.{l}", dtype, ["batch", hkv, t_dim if in_place else p_dim, dh]))
    kv = {"layers": n_layers, "kv_heads": hkv, "head_dim": dh, "mode": "in_place" if in_place else "returned",
          "dtype": dtype, "past_key": "past_key.%d", "past_value": "past_value.%d",
          "out_key": f"{out}_key.%d", "out_value": f"{out}_value.%d"}
    return past, new, kv


def pairs(flat):
    """Interleaved (key, value, key, value, ...) -> (keys, values)."""
    return list(flat[0::2]), list(flat[1::2])


def interleave(ks, vs):
    return [t for kv in zip(ks, vs) for t in kv]
