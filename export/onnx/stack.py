"""The transformer stacks of a bundle: what every family hands the exporter, and the portable graphs.

A family describes its backbone as `BackboneParts` and its depth decoder (if any) as
`DepthParts`: the decoder stack (`Transformer`), one embedding table whose rows are
summed per position, the head, and how the engine addresses the table. The exporter
turns the parts into two graph roles with one input/output contract, in one of two
forms:

- portable (`PortableBackbone`, `PortableDepth`, traced by `torch.onnx`): standard ONNX
  operators only; the graph returns each call's new K/V and the engine writes them;
- fused (`fused.py`): ONNX Runtime's fused operators; K/V are written in place.

`backbone` (prefill and step are the same graph):

    ids            int64 [batch, seq, slots]  rows of the table, summed over `slots`
    voice          float [batch, speaker_dim] (families with a voice projection; zeros for audio)
    seqlens_k      int32 [batch]   per row: its valid cache length after this call, minus 1
    query_seqlens  int32 [batch]   per row: its new positions in this call (>= 1; padding beyond)
    past_key.{l} / past_value.{l}  [batch, Hkv, cache_len, Dh]  the slots' caches
    -> logits [batch, V] and (depth families) hidden [batch, D] of each row's last new position
       (a layout that cuts its head per frame position returns hidden only, and graph `head.{j}`
       maps it to the logits of the columns position j may sample),
       new_key.{l} / new_value.{l} [batch, Hkv, seq, Dh] (portable) or
       present_key.{l} / present_value.{l} bound to the past buffers (fused, written in place)

Row b's new positions are `seqlens_k[b] + 1 - query_seqlens[b]` onwards: a prefill after a
cached prefix, a batch of steps at their own positions, a voice's acoustic frames, all one call.

`depth` (one position of the depth decoder for the whole batch):

    hidden   float [batch, backbone_dim]   the backbone's hidden state of the frame
    ids      int64 [batch]                 the table row of this position's input code (the null row: none)
    depth_pos int64 [1]                    the position (all rows share it)
    past_key.{l} / past_value.{l}          [batch, Hkv, depth_len, Dh]
    -> logits [batch, V] with head `max(depth_pos - prime, 0)`, and new / present K/V as above

Its input is `table[ids] + (depth_pos == 0) * in_proj(hidden)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..model.transformer import Transformer
from .spec import FLOAT, INT, GraphSpec, TensorSpec, interleave, kv_specs, pairs

I32 = "int32"


@dataclass
class BackboneParts:
    """A backbone as the exporter needs it. `table` rows: see `embedding` (the engine's addressing)."""

    body: Transformer
    table: torch.Tensor  # [R, D]; the last row is zeros (the null row)
    head: torch.Tensor  # [V, D] (an nn.Linear weight)
    embedding: dict  # {"slots", "text_offset", "code_offsets" (list or None), "null_row"}
    voice_proj: torch.Tensor | None = None  # [D, E]: voice @ W^T is added to every position
    hidden: bool = False  # also output the hidden state (a depth decoder follows)
    heads: list[tuple[int, int]] | None = None  # the head cut per frame position (rows of `head`): no logits output

    @property
    def outputs_hidden(self) -> bool:
        return self.hidden or self.heads is not None


@dataclass
class DepthParts:
    body: Transformer
    table: torch.Tensor  # [R, Dd]; the last row is zeros
    in_proj: torch.Tensor  # [Dd, Db]: the backbone hidden's projection, added at position 0
    heads: torch.Tensor  # [H, Dd, V]
    embedding: dict  # {"offsets": per depth position the row of code 0 (None: the null row), "null_row"}
    prime: int = 0
    extra: dict = field(default_factory=dict)


def with_null_row(table: torch.Tensor) -> torch.Tensor:
    """`table` with a row of zeros appended (the row that adds nothing)."""
    return torch.cat([table.detach().float(), table.new_zeros(1, table.shape[1]).float()])


def _positions(seqlens_k, query_seqlens, P: int):
    """(past_len [B] int64, positions [B, P]) of a call."""
    past_len = (seqlens_k + 1 - query_seqlens).long()
    return past_len, past_len[:, None] + torch.arange(P)[None, :]


class PortableBackbone(nn.Module):
    """The `backbone` role in standard ONNX operators (the engine writes the returned K/V)."""

    def __init__(self, parts: BackboneParts):
        super().__init__()
        self.body = parts.body
        self.register_buffer("table", parts.table.detach().float().contiguous())
        self.register_buffer("head", parts.head.detach().float().contiguous())
        self.voice_proj = None if parts.voice_proj is None else nn.Parameter(parts.voice_proj.detach().float(),
                                                                             requires_grad=False)
        self.with_logits, self.with_hidden = parts.heads is None, parts.outputs_hidden

    def forward(self, ids, *rest):
        if self.voice_proj is not None:
            voice, seqlens_k, query_seqlens, *past = rest
        else:
            voice, (seqlens_k, query_seqlens, *past) = None, rest
        x = self.table[ids].sum(2)  # [B, P, D]
        if voice is not None:
            x = x + (voice @ self.voice_proj.t())[:, None, :]
        past_len, positions = _positions(seqlens_k, query_seqlens, ids.shape[1])
        pk, pv = pairs(past)
        h, nk, nv = self.body(x, positions, pk, pv, past_len)
        idx = (query_seqlens.long() - 1)[:, None, None].expand(-1, 1, h.shape[-1])
        last = h.gather(1, idx)[:, 0]  # [B, D]
        out = ((last @ self.head.t(),) if self.with_logits else ()) + ((last,) if self.with_hidden else ())
        return (*out, *interleave(nk, nv))


class PortableDepth(nn.Module):
    """The `depth` role in standard ONNX operators."""

    def __init__(self, parts: DepthParts):
        super().__init__()
        self.body = parts.body
        self.register_buffer("table", parts.table.detach().float().contiguous())
        self.register_buffer("in_proj", parts.in_proj.detach().float().contiguous())
        self.register_buffer("heads", parts.heads.detach().float().contiguous())
        self.prime = parts.prime

    def forward(self, hidden, ids, depth_pos, *past):
        first = (depth_pos == 0).to(hidden.dtype)  # [1]
        x = self.table[ids] + (hidden @ self.in_proj.t()) * first  # [B, Dd]
        pos = depth_pos.expand(hidden.shape[0])  # [B]
        pk, pv = pairs(past)
        h, nk, nv = self.body(x[:, None], pos[:, None], pk, pv, pos)
        head = self.heads.index_select(0, (depth_pos - self.prime).clamp(min=0))[0]  # [Dd, V]
        return (h[:, 0] @ head, *interleave(nk, nv))


def backbone_io(parts: BackboneParts, speaker_dim: int, in_place: bool, dtype: str = FLOAT):
    """(inputs, outputs, manifest kv entry) of the `backbone` role."""
    b = parts.body.cfg
    ins = [TensorSpec("ids", INT, ["batch", "seq", parts.embedding["slots"]])]
    if parts.voice_proj is not None:
        ins.append(TensorSpec("voice", dtype, ["batch", speaker_dim]))
    ins += [TensorSpec("seqlens_k", I32, ["batch"]), TensorSpec("query_seqlens", I32, ["batch"])]
    outs = [TensorSpec("logits", dtype, ["batch", parts.head.shape[0]])] if parts.heads is None else []
    if parts.outputs_hidden:
        outs.append(TensorSpec("hidden", dtype, ["batch", b.dim]))
    past, new, kv = kv_specs(b.n_layers, b.n_kv_heads, b.head_dim, "cache_len", "seq", in_place, dtype)
    return ins + past, outs + new, kv


def depth_io(parts: DepthParts, backbone_dim: int, in_place: bool, dtype: str = FLOAT):
    d = parts.body.cfg
    ins = [TensorSpec("hidden", dtype, ["batch", backbone_dim]), TensorSpec("ids", INT, ["batch"]),
           TensorSpec("depth_pos", INT, [1])]
    outs = [TensorSpec("logits", dtype, ["batch", parts.heads.shape[2]])]
    past, new, kv = kv_specs(d.n_layers, d.n_kv_heads, d.head_dim, "depth_len", 1, in_place, dtype)
    return ins + past, outs + new, kv


class PortableHead(nn.Module):
    """`head.{j}`: the hidden state -> the logits of one column range."""

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", rows.detach().float().contiguous())

    def forward(self, hidden):
        return hidden @ self.weight.t()


def head_io(parts: BackboneParts, j: int, dtype: str = FLOAT):
    lo, hi = parts.heads[j]
    return [TensorSpec("hidden", dtype, ["batch", parts.body.cfg.dim])], [TensorSpec("logits", dtype, ["batch", hi - lo])]


def head_specs(parts: BackboneParts) -> list[GraphSpec]:
    """The `head.{j}` roles as portable graphs (none unless the parts cut their head)."""
    specs = []
    for j, (lo, hi) in enumerate(parts.heads or ()):
        ins, outs = head_io(parts, j)
        specs.append(GraphSpec(f"head.{j}", PortableHead(parts.head[lo:hi]).eval(), ins, outs,
                               (torch.randn(2, parts.body.cfg.dim),)))
    return specs


def portable_specs(bb: BackboneParts, depth: DepthParts | None, speaker_dim: int) -> list[GraphSpec]:
    """The `backbone` (and `depth`) roles as portable graphs, with example inputs for tracing."""
    b = bb.body.cfg
    B, P, T, S = 2, 5, 7, bb.embedding["slots"]
    ins, outs, kv = backbone_io(bb, speaker_dim, in_place=False)
    cache = [torch.randn(B, b.n_kv_heads, T, b.head_dim) for _ in range(2 * b.n_layers)]
    voice = (torch.randn(B, speaker_dim),) if bb.voice_proj is not None else ()
    example = (torch.randint(0, bb.table.shape[0], (B, P, S)), *voice, torch.tensor([T + P - 1, 4], dtype=torch.int32),
               torch.tensor([P, 3], dtype=torch.int32), *cache)
    specs = [GraphSpec("backbone", PortableBackbone(bb).eval(), ins, outs, example, kv,
                       extra={"embedding": bb.embedding})]
    if depth is not None:
        d = depth.body.cfg
        ins, outs, kv = depth_io(depth, b.dim, in_place=False)
        dcache = [torch.randn(B, d.n_kv_heads, 3, d.head_dim) for _ in range(2 * d.n_layers)]
        example = (torch.randn(B, b.dim), torch.randint(0, depth.table.shape[0], (B,)), torch.tensor([1]), *dcache)
        specs.append(GraphSpec("depth", PortableDepth(depth).eval(), ins, outs, example, kv,
                               extra={"embedding": depth.embedding}))
    return specs
