"""Fixtures of the family tests: tiny random checkpoints built with the families' own code
(transformers, snac, tokenizers), and their bundles, once per session."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("transformers", reason="the family exporters need transformers: pip install -e .[export]")
pytest.importorskip("snac", reason="the Orpheus exporter needs snac: pip install -e .[export]")


@pytest.fixture(scope="session")
def ckpt_root(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def orpheus_dir(ckpt_root):
    from cadenza.benchmarks.random_checkpoints import make_orpheus

    return make_orpheus(str(ckpt_root / "orpheus"), seed=0)


@pytest.fixture(scope="session")
def snac_dir(ckpt_root):
    from cadenza.benchmarks.random_checkpoints import make_snac

    return make_snac(str(ckpt_root / "snac"), seed=0)


@pytest.fixture(scope="session")
def orpheus_bundle(orpheus_dir, snac_dir, tmp_path_factory):
    from cadenza.export.families import export_family

    return export_family("orpheus", orpheus_dir, tmp_path_factory.mktemp("orpheus_bundle"), snac_dir)


@pytest.fixture(scope="session")
def orpheus_hf(orpheus_dir):
    """The family's own model: transformers' LlamaForCausalLM."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(orpheus_dir).eval()


@pytest.fixture(scope="session")
def snac_ref(snac_dir):
    """The family's own codec (snac.SNAC) with its noise blocks removed: the deterministic reference."""
    from snac import SNAC
    from snac.layers import NoiseBlock
    from torch import nn

    model = SNAC.from_pretrained(snac_dir).eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, NoiseBlock):
                setattr(module, name, nn.Identity())
    return model


@pytest.fixture(scope="session")
def csm_dir(ckpt_root):
    from cadenza.benchmarks.random_checkpoints import make_csm

    return make_csm(str(ckpt_root / "csm"), seed=0)


@pytest.fixture(scope="session")
def csm_bundle(csm_dir, tmp_path_factory):
    from cadenza.export.families import export_family

    return export_family("csm", csm_dir, tmp_path_factory.mktemp("csm_bundle"))


@pytest.fixture(scope="session")
def csm_hf(csm_dir):
    """The family's own model: transformers' CsmForConditionalGeneration (Mimi inside)."""
    from transformers import CsmForConditionalGeneration

    return CsmForConditionalGeneration.from_pretrained(csm_dir).eval()


@pytest.fixture
def edited_copy(tmp_path):
    """`edited_copy(src, name, **config)`: a copy of checkpoint directory `src` under `name` whose
    config.json has `config` merged in (a checkpoint made wrong on purpose)."""
    def make(src, name, **config):
        d = shutil.copytree(src, tmp_path / name)
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(config)
        (d / "config.json").write_text(json.dumps(cfg))
        return d
    return make
