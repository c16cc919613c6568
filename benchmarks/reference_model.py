"""The bundle's PyTorch reference model (`weights/`, written by `cadenza export --torch-weights`), for the
torch-eager baseline and the peers' conversion to a Hugging Face checkpoint."""
from __future__ import annotations

from pathlib import Path

from cadenza.engine.contract.bundle import REBUILD_HINT, BundleError

RUN_PARTS = ("backbone.", "depth.", "codec.quantizer.", "codec.decoder.")  # what a TTS stream runs


def load_reference(weights: Path):
    """The bundle's PyTorch model, checked on the parts a stream runs.

    Unlike `TTSModel.load`, a speaker or codec encoder that changed since the
    bundle was exported is tolerated (a stream never runs them); every weight
    of the backbone, depth decoder and codec decoder must load, shapes included.
    """
    from cadenza.export.model.config import TTSConfig
    from cadenza.export.model.model import TTSModel
    from safetensors.torch import load_file

    if not (weights / "config.json").is_file() or not (weights / "model.safetensors").is_file():
        raise BundleError(f"{weights} has no PyTorch weights (config.json + model.safetensors) for the torch-eager "
                          "baseline; export the bundle with `cadenza export ... --torch-weights`, or leave "
                          "torch-eager out of --baselines")
    model = TTSModel(TTSConfig.from_json(weights / "config.json"))
    state = {k: v for k, v in load_file(str(weights / "model.safetensors")).items() if k.startswith(RUN_PARTS)}
    try:
        missing, _ = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise BundleError(f"{weights} does not fit its config.json ({str(e).splitlines()[-1].strip()}); "
                          f"{REBUILD_HINT}") from None
    missing = [k for k in missing if k.startswith(RUN_PARTS)]
    if missing:
        raise BundleError(f"{weights} lacks {missing[:3]} for the torch-eager baseline; {REBUILD_HINT}")
    return model.eval()
