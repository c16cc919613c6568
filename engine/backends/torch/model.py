"""The torch backend's model: the bundle's PyTorch weights, checked, and whether a dtype runs.

Imported only by the torch backend: the ONNX Runtime path never imports torch.
"""
from __future__ import annotations

import json

import torch

from ...contract.bundle import Bundle
from ...contract.files import read_verified
from ...errors import BackendUnavailable, BundleError

REFERENCE_FAMILY = "cadenza-reference"


def load_model(bundle: Bundle):
    """The PyTorch model stored in a bundle's `weights/` directory, checked against the manifest before
    anything is allocated (the manifest's values are bounded; `weights/config.json` must agree with them)."""
    from cadenza.export.model.config import TTSConfig
    from cadenza.export.model.model import TTSModel

    if bundle.family != REFERENCE_FAMILY:
        raise BackendUnavailable(f"the torch backends run the reference family only; this bundle is "
                                 f"{bundle.family!r}: use backend='ort'")
    files = bundle.manifest["files"]
    if "weights/model.safetensors" not in files or "weights/config.json" not in files:
        raise BundleError(f"bundle {bundle.path} has no PyTorch weights (weights/model.safetensors + config.json), "
                          "which the torch backends need; re-export it with `cadenza export ... --torch-weights`")
    raw = read_verified(bundle.path, "weights/config.json", files["weights/config.json"], str(bundle.path))
    try:
        cfg = TTSConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError) as e:
        raise BundleError(f"weights/config.json of {bundle.path} is not a model config ({e!r}); re-export") from None
    _check_config(bundle, cfg)
    try:
        return TTSModel.load(bundle.path / "weights", cfg)
    except ValueError as e:  # weights of another model version
        raise BundleError(f"{e}; re-export the bundle with this version of cadenza") from e


def _check_config(bundle: Bundle, cfg) -> None:
    c = bundle.constants
    want = {"n_codebooks": cfg.n_codebooks, "codebook_size": cfg.codebook_size, "speaker_dim": cfg.speaker_dim,
            "backbone_dim": cfg.backbone.dim, "backbone_layers": cfg.backbone.n_layers,
            "kv_heads": cfg.backbone.n_kv_heads, "head_dim": cfg.backbone.head_dim,
            "max_seq_len": cfg.backbone.max_seq_len}
    bad = {k: (getattr(c, k), v) for k, v in want.items() if getattr(c, k) != v}
    if bundle.layout.eos_column != cfg.eos_id:
        bad["eos_column"] = (bundle.layout.eos_column, cfg.eos_id)
    if cfg.n_codebooks > 1 and (cfg.depth.n_layers, cfg.depth.n_kv_heads, cfg.depth.head_dim) != (
            c.depth_layers, c.depth_kv_heads, c.depth_head_dim):
        bad["depth"] = ((c.depth_layers, c.depth_kv_heads, c.depth_head_dim),
                        (cfg.depth.n_layers, cfg.depth.n_kv_heads, cfg.depth.head_dim))
    if cfg.depth.dim > 1 << 15 or cfg.backbone.ffn_dim > 1 << 17 or cfg.depth.ffn_dim > 1 << 17:
        bad["sizes"] = (cfg.depth.dim, cfg.backbone.ffn_dim, cfg.depth.ffn_dim)
    if bad:
        raise BundleError(f"weights/config.json of {bundle.path} does not match its manifest (manifest, weights): "
                          f"{bad}; re-export the bundle")


def check_dtype(model, dtype: torch.dtype, device: torch.device) -> None:
    """Raise BackendUnavailable if the model's attention cannot run in `dtype` (one tiny call)."""
    if dtype == torch.float32:
        return
    b = model.cfg.backbone
    attn = model.backbone.transformer.layers[0].attn
    x = torch.zeros(1, 1, b.dim, device=device, dtype=dtype)
    past = torch.zeros(1, b.n_kv_heads, 1, b.head_dim, device=device, dtype=dtype)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    try:
        with torch.no_grad():
            attn(x, zero[:, None], past, past, zero)
    except RuntimeError as e:
        raise BackendUnavailable(
            f"the model's attention does not run in {dtype} ({e}); cadenza.export.model.transformer.rope must return "
            "its input's dtype (end it with `.to(x.dtype)`), or use dtype=torch.float32") from e
