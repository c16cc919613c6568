"""The `backbone` and `depth` roles built from ONNX Runtime's fused operators (the CPU default).

Same contract as the portable graphs (`stack.py`), built node by node with `onnx.helper`
from a family's parts rather than traced:

- per layer: `SkipSimplifiedLayerNormalization` (the residual add and the RMS norm in one
  kernel), one packed QKV projection, `GroupQueryAttention` (rotary embedding inside, the
  new K/V written in place into the bound cache, rows at their own positions via
  `seqlens_k` / `query_seqlens`), the output projection, and the SwiGLU MLP;
- weights as `MatMul` (fp32, fp16) or block-quantised `MatMulNBits` (int8, int4; packed by
  ONNX Runtime's own quantisation kernels, one tensor at a time);
- `GroupQueryAttention` reads each row's cache up to its own length only, so a step costs
  what the batch needs whatever the cache's size.

The result needs ONNX Runtime (1.32 or later: `query_seqlens`); `--graphs portable` writes
standard operators for other runtimes.

Weights are written as they are built: tensors above `INLINE_BYTES` go straight into the
graph's external data file when the graph is large, so a multi-gigabyte model is never held
twice in memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

from ..model.transformer import Transformer
from .stack import BackboneParts, DepthParts, backbone_io, depth_io, head_io

MS = "com.microsoft"
OPSET_FUSED = 23  # RMSNormalization
PRECISIONS = ("fp32", "fp16", "int8", "int4")
INLINE_BYTES = 1024


@dataclass(frozen=True)
class FusedOptions:
    """How the fused graphs store their weights.

    precision: fp32 / fp16 (weights, activations and KV cache in half precision) / int8 /
        int4 (block-quantised `MatMulNBits`, symmetric; fp32 activations in and out).
    block_size: quantisation block along the input dimension (32 or 128).
    accuracy_level: `MatMulNBits` compute type; 4 = int8 activations (the fast CPU path: with 0
        the 8-bit kernel falls back to a path over ten times slower).
    """

    precision: str = "fp32"
    block_size: int = 32
    accuracy_level: int = 4

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ValueError(f"block_size must be 16, 32, 64, 128 or 256, got {self.block_size}")

    @property
    def bits(self) -> int:
        return {"int8": 8, "int4": 4}.get(self.precision, 0)

    @property
    def float_type(self) -> str:
        return "float16" if self.precision == "fp16" else "float32"


class _Builder:
    """Nodes and initializers of one graph; large initializers go to `data` as they come."""

    def __init__(self, opts: FusedOptions, data: Path | None):
        self.opts = opts
        self.np_float = np.float16 if opts.precision == "fp16" else np.float32
        self.onnx_float = TP.FLOAT16 if opts.precision == "fp16" else TP.FLOAT
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.data, self._offset, self._file = data, 0, None
        self.weight_bytes = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def tensor(self, name: str, arr: np.ndarray) -> str:
        arr = np.ascontiguousarray(arr)
        self.weight_bytes += arr.nbytes
        if self.data is None or arr.nbytes <= INLINE_BYTES:
            self.inits.append(nh.from_array(arr, name))
            return name
        if self._file is None:
            self._file = open(self.data, "wb")
        pad = -self._offset % 64  # aligned, so a view of the bytes is an aligned array
        self._file.write(b"\0" * pad)
        self._offset += pad
        self._file.write(arr.tobytes())
        t = onnx.TensorProto(name=name, data_type=oh.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", self.data.name), ("offset", str(self._offset)), ("length", str(arr.nbytes))):
            t.external_data.add(key=k, value=v)
        self.inits.append(t)
        self._offset += arr.nbytes
        return name

    def float(self, name: str, t) -> str:
        """A float initializer in the graph's float type (from a torch tensor or an array)."""
        a = t.detach().float().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
        return self.tensor(name, a.astype(self.np_float))

    def const(self, name: str, value, dtype) -> str:
        return self.tensor(name, np.asarray(value, dtype))

    def op(self, op_type: str, inputs: list[str], outputs: list[str] | str | None = None, *, name: str,
           domain: str = "", **attrs) -> str | list[str]:
        outs = [outputs] if isinstance(outputs, str) else outputs or [f"{name}/out"]
        self.nodes.append(oh.make_node(op_type, inputs, outs, name=name, domain=domain or None, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def linear(self, x: str, weight: torch.Tensor, name: str, quantize: bool = True) -> str:
        """x @ weight^T for an nn.Linear weight [out, in]: MatMul, or MatMulNBits (int8 / int4)."""
        w = weight.detach().float().numpy().T  # [in, out] = [K, N]
        bits = self.opts.bits if quantize else 0
        K, N = w.shape
        if bits and K % self.opts.block_size == 0:
            packed, scales = quantize_block(np.ascontiguousarray(w), bits, self.opts.block_size)
            return self.op("MatMulNBits", [x, self.tensor(f"{name}.qweight", packed), self.tensor(f"{name}.scales", scales)],
                           name=name, domain=MS, K=K, N=N, bits=bits, block_size=self.opts.block_size,
                           accuracy_level=self.opts.accuracy_level)
        return self.op("MatMul", [x, self.float(f"{name}.weight_t", w)], name=name)


def quantize_block(w_kn: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's own block quantisation of a [K, N] weight: (packed [N, K/block, block*bits/8], scales [N, K/block])."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, DefaultWeightOnlyQuantizer

    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, bits=bits)
    packed, scales, _ = DefaultWeightOnlyQuantizer(cfg).qbits_block_quant(w_kn)
    return packed, scales


def rope_tables(body: Transformer, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """cos / sin [rows, Dh/2] of positions 0..rows-1, from the stack's own inverse frequencies."""
    inv = body.layers[0].attn.inv_freq.detach().float()
    freqs = torch.arange(rows, dtype=torch.float32)[:, None] * inv[None]
    return freqs.cos().numpy(), freqs.sin().numpy()


def check_stack(body: Transformer, role: str) -> None:
    """ValueError unless ONNX Runtime's GroupQueryAttention can run this stack."""
    if body.cfg.head_dim % 16:
        raise ValueError(f"the {role}'s head size {body.cfg.head_dim} is not a multiple of 16, which ONNX Runtime's "
                         "fused attention needs; export with --graphs portable")


def _layers(g: _Builder, body: Transformer, x: str, rows: int, seqlens_k: str, query_seqlens: str) -> tuple[str, str]:
    """The decoder stack over x [B, P, D]; returns (the last MLP output, the residual) before the final norm."""
    c = body.cfg
    cos, sin = rope_tables(body, rows)
    cos_n, sin_n = g.float("rope.cos", cos), g.float("rope.sin", sin)
    top = g.op("ReduceMax", [seqlens_k], name="total.max", keepdims=0)
    total = g.op("Add", [top, g.const("one_i32", 1, np.int32)], name="total")
    residual, mlp_out = x, None
    for i, layer in enumerate(body.layers):
        p = f"layers.{i}"
        w = g.float(f"{p}.attn_norm", layer.attn_norm.weight)
        if mlp_out is None:
            xn = g.op("RMSNormalization", [residual, w], name=f"{p}.attn_norm", axis=-1,
                      epsilon=float(c.norm_eps), stash_type=1)
        else:
            xn, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [mlp_out, residual, w],
                                      [f"{p}.attn_norm/out", "", "", f"{p}.residual_attn"], name=f"{p}.attn_norm",
                                      domain=MS, epsilon=float(c.norm_eps))
        a = layer.attn
        qkv = g.linear(xn, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), f"{p}.qkv_proj")
        attn = g.op("GroupQueryAttention",
                    [qkv, "", "", f"past_key.{i}", f"past_value.{i}", seqlens_k, total, cos_n, sin_n,
                     "", "", "", "", "", "", "", query_seqlens],
                    [f"{p}.attn", f"present_key.{i}", f"present_value.{i}"], name=f"{p}.attention",
                    domain=MS, num_heads=c.n_heads, kv_num_heads=c.n_kv_heads, do_rotary=1, rotary_interleaved=0,
                    scale=1.0 / math.sqrt(c.head_dim))[0]
        o = g.linear(attn, a.o_proj.weight, f"{p}.o_proj")
        w = g.float(f"{p}.mlp_norm", layer.mlp_norm.weight)
        xn, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [o, residual, w],
                                  [f"{p}.mlp_norm/out", "", "", f"{p}.residual_mlp"], name=f"{p}.mlp_norm",
                                  domain=MS, epsilon=float(c.norm_eps))
        m = layer.mlp
        gate = g.linear(xn, m.gate_proj.weight, f"{p}.gate_proj")
        up = g.linear(xn, m.up_proj.weight, f"{p}.up_proj")
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], name=f"{p}.sigmoid")], name=f"{p}.silu")
        mlp_out = g.linear(g.op("Mul", [silu, up], name=f"{p}.gated"), m.down_proj.weight, f"{p}.down_proj")
    return mlp_out, residual


def _io(specs) -> list[onnx.ValueInfoProto]:
    types = {"float32": TP.FLOAT, "float16": TP.FLOAT16, "int64": TP.INT64, "int32": TP.INT32}
    return [oh.make_tensor_value_info(t.name, types[t.dtype], list(t.shape)) for t in specs]


def _model(g: _Builder, name: str, ins, outs) -> onnx.ModelProto:
    graph = oh.make_graph(g.nodes, name, _io(ins), _io(outs), g.inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET_FUSED), oh.make_opsetid(MS, 1)],
                          producer_name="cadenza")
    model.ir_version = 10
    return model


def build_backbone(parts: BackboneParts, speaker_dim: int, opts: FusedOptions, data: Path | None = None):
    """(model, inputs, outputs, kv entry, weight bytes) of the fused `backbone` role."""
    check_stack(parts.body, "backbone")
    ins, outs, kv = backbone_io(parts, speaker_dim, in_place=True, dtype=opts.float_type)
    g = _Builder(opts, data)
    try:
        emb = g.op("Gather", [g.float("embed.table", parts.table), "ids"], name="embed.gather", axis=0)  # [B, P, S, D]
        x = g.op("ReduceSum", [emb, g.const("axis_2", [2], np.int64)], name="embed.sum", keepdims=0)  # [B, P, D]
        if parts.voice_proj is not None:
            v = g.op("MatMul", ["voice", g.float("voice_proj.weight_t", parts.voice_proj.t())], name="voice_proj")
            v = g.op("Unsqueeze", [v, g.const("axis_1", [1], np.int64)], name="voice.unsqueeze")
            x = g.op("Add", [x, v], name="embed.voice")
        body = parts.body
        mlp_out, residual = _layers(g, body, x, body.cfg.max_seq_len, "seqlens_k", "query_seqlens")
        h = g.op("SkipSimplifiedLayerNormalization", [mlp_out, residual, g.float("final_norm", body.norm.weight)],
                 name="final_norm", domain=MS, epsilon=float(body.cfg.norm_eps))  # [B, P, D]
        last = g.op("Sub", [g.op("Cast", ["query_seqlens"], name="last.cast", to=TP.INT64),
                            g.const("one_i64", 1, np.int64)], name="last.index")
        last = g.op("Unsqueeze", [last, g.const("axis_m1", [-1], np.int64)], name="last.unsqueeze")  # [B, 1]
        hidden = g.op("GatherND", [h, last], "hidden" if parts.outputs_hidden else None, name="last.gather",
                      batch_dims=1)
        if parts.heads is None:
            g.op("Identity", [g.linear(hidden, parts.head, "head")], "logits", name="logits")
        return _model(g, "cadenza_backbone", ins, outs), ins, outs, kv, g.weight_bytes
    finally:
        g.close()


def build_head(parts: BackboneParts, j: int, opts: FusedOptions, data: Path | None = None):
    """(model, inputs, outputs, None, weight bytes) of `head.{j}`: the rows of the head that frame
    position j may sample."""
    lo, hi = parts.heads[j]
    ins, outs = head_io(parts, j, opts.float_type)
    g = _Builder(opts, data)
    try:
        g.op("Identity", [g.linear("hidden", parts.head[lo:hi], "head")], "logits", name="logits")
        return _model(g, f"cadenza_head_{j}", ins, outs), ins, outs, None, g.weight_bytes
    finally:
        g.close()


def build_depth(parts: DepthParts, backbone_dim: int, opts: FusedOptions, data: Path | None = None):
    """(model, inputs, outputs, kv entry, weight bytes) of the fused `depth` role."""
    check_stack(parts.body, "depth decoder")
    ins, outs, kv = depth_io(parts, backbone_dim, in_place=True, dtype=opts.float_type)
    g = _Builder(opts, data)
    try:
        first = g.op("Cast", [g.op("Equal", ["depth_pos", g.const("zero_i64", [0], np.int64)], name="first.eq")],
                     name="first", to=g.onnx_float)  # [1]
        proj = g.linear("hidden", parts.in_proj, "in_proj")  # [B, Dd]
        x = g.op("Add", [g.op("Gather", [g.float("embed.table", parts.table), "ids"], name="embed.gather", axis=0),
                         g.op("Mul", [proj, first], name="in_proj.first")], name="embed")
        x = g.op("Unsqueeze", [x, g.const("axis_1", [1], np.int64)], name="embed.unsqueeze")  # [B, 1, Dd]
        batch = g.op("Shape", ["ids"], name="batch")  # [1] = [B]
        pos32 = g.op("Cast", ["depth_pos"], name="pos.i32", to=TP.INT32)
        seqlens_k = g.op("Expand", [pos32, batch], name="seqlens_k")
        query_seqlens = g.op("Expand", [g.const("one_i32_1", [1], np.int32), batch], name="query_seqlens")
        body = parts.body
        mlp_out, residual = _layers(g, body, x, body.cfg.max_seq_len, seqlens_k, query_seqlens)
        h = g.op("SkipSimplifiedLayerNormalization", [mlp_out, residual, g.float("final_norm", body.norm.weight)],
                 name="final_norm", domain=MS, epsilon=float(body.cfg.norm_eps))  # [B, 1, Dd]
        h = g.op("Squeeze", [h, g.const("axis_1b", [1], np.int64)], name="final.squeeze")  # [B, Dd]
        k = g.op("Max", [g.op("Sub", ["depth_pos", g.const("prime", [parts.prime], np.int64)], name="head.sub"),
                         g.const("zero_i64b", [0], np.int64)], name="head.index")
        head = g.op("Gather", [g.float("heads", parts.heads), k], name="head.gather", axis=0)  # [1, Dd, V]
        head = g.op("Squeeze", [head, g.const("axis_0", [0], np.int64)], name="head.squeeze")
        g.op("MatMul", [h, head], "logits", name="head")
        return _model(g, "cadenza_depth", ins, outs), ins, outs, kv, g.weight_bytes
    finally:
        g.close()
