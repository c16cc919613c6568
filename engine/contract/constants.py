"""`ModelConstants`: the manifest's `constants` block as a typed, checked record.

The engine reads model constants only through this class, never by indexing the
manifest, so a missing or malformed constant is one `BundleError` at load time.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import BundleError
from . import validate


@dataclass(frozen=True)
class ModelConstants:
    """What the run time needs to know about a bundle's model (all from `manifest.json`)."""

    sample_rate: int  # PCM samples per second
    hop: int  # samples per codec frame
    frame_rate: float  # codec frames per second (= sample_rate / hop)
    n_codebooks: int  # K: codes per frame
    codebook_size: int  # C: codes per codebook
    speaker_dim: int  # E: speaker embedding floats (0: the family takes no embedding)
    max_seq_len: int  # backbone context (KV positions)
    backbone_dim: int
    backbone_layers: int
    kv_heads: int
    head_dim: int
    depth_layers: int  # 0 when K == 1 (no depth decoder)
    depth_kv_heads: int
    depth_head_dim: int

    @classmethod
    def from_manifest(cls, manifest: dict, where: str = "the manifest") -> "ModelConstants":
        """Read and type-check `manifest["constants"]`; BundleError naming the field otherwise."""
        c = manifest.get("constants")
        if not isinstance(c, dict):
            raise BundleError(f"{where} has no constants block; rebuild the bundle with `cadenza export`")
        values = {}
        for f in fields(cls):
            v = c.get(f.name)
            want = float if f.type == "float" else int
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and v != int(v)):
                raise BundleError(f"{where}: constant {f.name!r} must be {want.__name__}, got {v!r}; "
                                  "rebuild the bundle with `cadenza export`")
            values[f.name] = want(v)
        validate.constants(values, where)
        return cls(**values)


@dataclass(frozen=True)
class CodecSpec:
    """How the codec decoder streams (the manifest's `codec` block).

    kind: "stateful": `codec_decode` carries state tensors between calls, so chunks decode
        exactly as one offline decode (causal codecs: the reference family, Mimi);
        "window": `codec_decode` is stateless and not causal (SNAC): frames are decoded inside
        a window with `left` frames of context before them and `right` after, so a chunk's
        audio lags generation by `right` frames (exact when the window covers the decoder's
        receptive field).
    """

    kind: str = "stateful"
    left: int = 0
    right: int = 0

    @property
    def lookahead(self) -> int:
        """Frames generated before a frame's audio can be decoded."""
        return self.right if self.kind == "window" else 0

    @classmethod
    def from_manifest(cls, manifest: dict, where: str = "the manifest") -> "CodecSpec":
        d = manifest.get("codec", {"kind": "stateful"})
        try:
            spec = cls(str(d["kind"]), int(d.get("left", 0)), int(d.get("right", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: the codec block is malformed ({e!r}); rebuild the bundle") from None
        if spec.kind not in ("stateful", "window") or not 0 <= spec.left <= 64 or not 0 <= spec.right <= 64:
            raise BundleError(f"{where}: codec {spec} is out of range; rebuild the bundle")
        return spec
