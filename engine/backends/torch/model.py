"""The torch backend's model: the bundle's PyTorch weights, checked, and whether a dtype runs.

Imported only by the torch backend: the ONNX Runtime path never imports torch.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...contract.bundle import Bundle
from ...errors import BackendUnavailable, BundleError

REFERENCE_FAMILY = "cadenza-reference"


def load_model(bundle: Bundle):
    """The PyTorch model stored in a bundle's `weights/` directory (checked against the manifest)."""
    from cadenza.export.model.model import TTSModel

    if bundle.family != REFERENCE_FAMILY:
        raise BackendUnavailable(f"the torch backends run the reference family only; this bundle is "
                                 f"{bundle.family!r}: use backend='ort'")
    w = Path(bundle.path) / "weights"
    if not (w / "model.safetensors").is_file() or not (w / "config.json").is_file():
        raise BundleError(f"bundle {bundle.path} has no PyTorch weights ({w}/model.safetensors + config.json), "
                          "which the torch backend needs; re-export it with weights (the default of to_onnx)")
    try:
        model = TTSModel.load(w)
    except ValueError as e:  # weights of another model version
        raise BundleError(f"{e}; re-export the bundle with this version of cadenza") from e
    c, cfg = bundle.constants, model.cfg
    want = {"n_codebooks": cfg.n_codebooks, "codebook_size": cfg.codebook_size,
            "backbone_layers": cfg.backbone.n_layers, "kv_heads": cfg.backbone.n_kv_heads}
    bad = {k: (getattr(c, k), v) for k, v in want.items() if getattr(c, k) != v}
    if bundle.layout.eos_column != cfg.eos_id:
        bad["eos_column"] = (bundle.layout.eos_column, cfg.eos_id)
    if bad:
        raise BundleError(f"weights/ of {bundle.path} do not match its manifest (manifest, weights): {bad}; "
                          "re-export the bundle")
    return model


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
