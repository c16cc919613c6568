"""A bundle's backbone for the peer engines: a Hugging Face Llama checkpoint, then GGUF and ORT-GenAI.

- `hf_checkpoint`: the reference family from the bundle's PyTorch weights (`weights/`, written by
  `cadenza export --torch-weights`) as a `LlamaForCausalLM` with vocabulary C + 1: its token t is
  row t of the backbone's embedding table (codebook 0's code t; t = C is the next row), its head
  is the backbone's head, the body maps one to one (the same rotate-half RoPE). Orpheus: the
  checkpoint the bundle was exported from (`manifest["source"]["checkpoint"]`), already a Llama,
  linked, not copied.
- Both get a small character SentencePiece `tokenizer.model` (the converters need a tokenizer;
  the benchmark feeds ids, so its pieces never matter; llama.cpp pads the vocabulary with `[PAD]`).
- `gguf`: llama.cpp's own converter (`convert_hf_to_gguf.py` from the llama.cpp source that
  llama-cpp-python vendors) to f32, then llama.cpp's quantizer (`llama_model_quantize`, every
  tensor at the one type: `pure`) to q8_0 / q4_0.
- `genai`: ORT-GenAI's model builder (`onnxruntime_genai.models.builder`), fp32 / int8 / int4 with
  the bundle's block size and accuracy level 4 (what Cadenza's `MatMulNBits` use).

Each product is cached under `<cache>/<bundle hash>/` and rebuilt only when missing; the tools run
in subprocesses (their imports, threads and memory stay out of the bench process).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadenza.engine.contract.bundle import Bundle

from .peer_setup import LLAMA_CPP_VERSION, default_root, source_tree
from .reference_model import load_reference

# bundle precision -> (GGUF type, GenAI precision)
PRECISIONS = {"fp32": ("f32", "fp32"), "int8": ("q8_0", "int8"), "int4": ("q4_0", "int4")}
ACCURACY_LEVEL = 4  # MatMulNBits compute type of Cadenza's fused graphs (int8 activations)
FAMILIES = ("cadenza-reference", "orpheus")


class PeerError(RuntimeError):
    """A peer cannot be built or run here; the message says what to install or do."""


@dataclass(frozen=True)
class Target:
    """What the peers must match: the bundle's family, its backbone's precision and block size."""

    family: str
    precision: str
    block_size: int | None
    bundle_hash: str

    @classmethod
    def of(cls, bundle: Bundle) -> Target:
        if bundle.family not in FAMILIES:
            raise PeerError(f"the peer baselines convert a Llama backbone; a {bundle.family} bundle has none they "
                            f"run (families: {', '.join(FAMILIES)})")
        g = bundle.graph("backbone")
        precision = g.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise PeerError(f"the peers run fp32, int8 or int4 weights; this bundle's backbone is {precision}")
        return cls(bundle.family, precision, g.get("block_size"), bundle.hash)

    @property
    def gguf_type(self) -> str:
        return PRECISIONS[self.precision][0]

    @property
    def tag(self) -> str:
        return self.precision + (f"-b{self.block_size}" if self.block_size else "")


def cache_dir(bundle: Bundle, root: str | Path | None = None) -> Path:
    """`<root>/<bundle hash[:16]>` (root default: $CADENZA_PEERS_CACHE, else the user cache's `cadenza/peers`)."""
    if root is None:
        root = default_root()
    d = Path(root) / bundle.hash[:16]
    d.mkdir(parents=True, exist_ok=True)
    return d


# ------------------------------------------------------------------------------------- HF Llama
def reference_state(model) -> dict:
    """The reference model's backbone under LlamaForCausalLM's tensor names (vocab C + 1)."""
    bb, C = model.backbone, model.cfg.codebook_size
    sd = {"model.embed_tokens.weight": bb.audio_emb.weight[:C + 1], "model.norm.weight": bb.transformer.norm.weight,
          "lm_head.weight": bb.head.weight}
    for i, blk in enumerate(bb.transformer.layers):
        p = f"model.layers.{i}"
        sd[f"{p}.input_layernorm.weight"] = blk.attn_norm.weight
        sd[f"{p}.post_attention_layernorm.weight"] = blk.mlp_norm.weight
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[f"{p}.self_attn.{n}.weight"] = getattr(blk.attn, n).weight
        for n in ("gate_proj", "up_proj", "down_proj"):
            sd[f"{p}.mlp.{n}.weight"] = getattr(blk.mlp, n).weight
    return {k: v.detach().float().contiguous().clone() for k, v in sd.items()}


def reference_config(cfg) -> dict:
    """config.json of that checkpoint."""
    b = cfg.backbone
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": b.dim,
            "intermediate_size": b.ffn_dim, "num_hidden_layers": b.n_layers, "num_attention_heads": b.n_heads,
            "num_key_value_heads": b.n_kv_heads, "head_dim": b.head_dim, "rms_norm_eps": b.norm_eps,
            "rope_theta": b.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": b.rope_theta},
            "max_position_embeddings": b.max_seq_len, "vocab_size": cfg.codebook_size + 1,
            "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
            "attention_dropout": 0.0, "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}


def write_tokenizer(out: Path) -> None:
    """A 48-piece character SentencePiece model + the files HF's LlamaTokenizer reads."""
    import sentencepiece as spm

    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789 .,")
    rng = np.random.default_rng(0)
    text = out / "spm_train.txt"
    text.write_text("\n".join("".join(rng.choice(alphabet, 60)) for _ in range(200)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(out / "tokenizer"), vocab_size=48,
                                   model_type="char", character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=-1, minloglevel=2)
    text.unlink()
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", **specials, "add_bos_token": False, "add_eos_token": False,
        "model_max_length": 1 << 20, "legacy": True}, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps(specials))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))


def hf_checkpoint(bundle: Bundle, cache: Path) -> Path:
    """The backbone as a Hugging Face Llama directory (cached in `cache/hf`)."""
    out = cache / "hf"
    if (out / "config.json").is_file() and (out / "tokenizer.model").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=".hf-", dir=cache))
    try:
        (_orpheus_hf if bundle.family == "orpheus" else _reference_hf)(bundle, tmp)
        write_tokenizer(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _reference_hf(bundle: Bundle, out: Path) -> None:
    from safetensors.torch import save_file

    weights = bundle.path / "weights"
    if not (weights / "model.safetensors").is_file():
        raise PeerError(f"{bundle.path} has no PyTorch weights to convert for the peers; export it with "
                        "`cadenza export ... --torch-weights` (the same seed and size give the same weights)")
    model = load_reference(weights)
    save_file(reference_state(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(reference_config(model.cfg), indent=1))


def _orpheus_hf(bundle: Bundle, out: Path) -> None:
    from cadenza.export.families.checkpoint import CheckpointError, resolve

    try:
        src = resolve(bundle.manifest["source"]["checkpoint"], "the checkpoint the bundle was exported from")
    except (CheckpointError, KeyError) as e:
        raise PeerError(f"the peers convert the bundle's own checkpoint: {e}") from None
    cfg = json.loads((src / "config.json").read_text())
    cfg.setdefault("torch_dtype", "float32")
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    names = [p.name for p in src.glob("*.safetensors")] + (["model.safetensors.index.json"]
                                                           if (src / "model.safetensors.index.json").is_file() else [])
    if not names:
        raise PeerError(f"{src} has no safetensors weights for the peer converters")
    for name in names:
        (out / name).symlink_to((src / name).resolve())


# ------------------------------------------------------------------------------------- GGUF
def llama_cpp_source(explicit: str | Path | None = None) -> Path:
    """The llama.cpp tree holding `convert_hf_to_gguf.py`: `explicit`, $CADENZA_LLAMA_CPP_SRC, or the sdist
    that `python -m cadenza.benchmarks.peer_setup` unpacked into the peers cache."""
    for cand in (explicit, os.environ.get("CADENZA_LLAMA_CPP_SRC"), source_tree(default_root())):
        if cand and (Path(cand) / "convert_hf_to_gguf.py").is_file():
            return Path(cand)
    raise PeerError("llama.cpp's converter (convert_hf_to_gguf.py) was not found; run "
                    "`python -m cadenza.benchmarks.peer_setup` (downloads and builds llama-cpp-python "
                    f"{LLAMA_CPP_VERSION}), or set CADENZA_LLAMA_CPP_SRC to a llama.cpp source tree")


def gguf(hf: Path, target: Target, cache: Path, src: str | Path | None = None) -> Path:
    """`cache/gguf/model-<type>.gguf`: llama.cpp's converter to f32, then its quantizer."""
    out_dir = cache / "gguf"
    out_dir.mkdir(exist_ok=True)
    f32 = out_dir / "model-f32.gguf"
    if not f32.is_file():
        tree = llama_cpp_source(src)
        tmp = f32.with_suffix(".tmp")
        _run([sys.executable, str(tree / "convert_hf_to_gguf.py"), str(hf), "--outtype", "f32", "--outfile", str(tmp)],
             "llama.cpp's convert_hf_to_gguf.py")
        tmp.rename(f32)
    if target.gguf_type == "f32":
        return f32
    out = out_dir / f"model-{target.gguf_type}.gguf"
    if not out.is_file():
        tmp = out.with_suffix(".tmp")
        _run([sys.executable, "-m", "cadenza.benchmarks.peer_convert", "quantize", str(f32), str(tmp),
              target.gguf_type], "llama.cpp's llama_model_quantize")
        tmp.rename(out)
    return out


def quantize(src: str, dst: str, kind: str) -> None:
    """llama.cpp's quantizer, every tensor at `kind` (q8_0 / q4_0)."""
    import llama_cpp as lc

    p = lc.llama_model_quantize_default_params()
    p.ftype = {"q8_0": lc.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": lc.LLAMA_FTYPE_MOSTLY_Q4_0}[kind]
    p.nthread = 2
    p.pure = True  # no q6_K head / mixed types: the same type everywhere, as Cadenza's MatMulNBits
    rc = lc.llama_model_quantize(src.encode(), dst.encode(), p)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize returned {rc}")


# ------------------------------------------------------------------------------------- GenAI
def genai(hf: Path, target: Target, cache: Path) -> Path:
    """`cache/genai-<precision>[-b<block>]`: ORT-GenAI's builder for the CPU at the bundle's precision."""
    out = cache / f"genai-{target.tag}"
    if (out / "genai_config.json").is_file():
        return out
    tmp = Path(str(out) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(tmp),
           "-p", PRECISIONS[target.precision][1], "-e", "cpu", "-c", str(cache / "genai-build-cache")]
    if target.block_size:
        cmd += ["--extra_options", f"block_size={target.block_size}", f"accuracy_level={ACCURACY_LEVEL}"]
    _run(cmd, "onnxruntime_genai's model builder")
    shutil.rmtree(cache / "genai-build-cache", ignore_errors=True)
    tmp.rename(out)
    return out


def _run(cmd: list[str], what: str) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-12:])
        raise PeerError(f"{what} failed (exit {p.returncode}):\n{tail}")


if __name__ == "__main__":  # `python -m cadenza.benchmarks.peer_convert quantize SRC DST q8_0|q4_0`
    if len(sys.argv) == 5 and sys.argv[1] == "quantize":
        quantize(*sys.argv[2:])
    else:
        raise SystemExit("usage: python -m cadenza.benchmarks.peer_convert quantize SRC.gguf DST.gguf q8_0|q4_0")
