"""`TokenLayout`: how a model's tokens make audio frames (the manifest's `layout` block, typed).

Two layouts, because real models use both:

- `depth` (the reference family, CSM): one backbone step per frame samples codebook 0
  from the backbone's logits; a depth decoder then samples codebooks 1..K-1. The
  next backbone step takes the frame's K codes. End of speech is either a logits
  column of codebook 0 (`eos = "column"`, the reference family) or a frame whose K
  codes are all 0 (`eos = "zero_frame"`, CSM).
- `flat` (Orpheus): a plain language model emits `tokens_per_frame` tokens per frame,
  one backbone step each. At frame position j only the ids of `allowed[j]` may be
  sampled; the stop ids only at a frame boundary (j == 0). The code of a token is
  its column minus the start of its range.

The backbone's logits cover vocabulary ids `[logits_offset, logits_offset + logits_size)`
(a head restricted to the ids that can ever be sampled); every range below is in
logits columns, not vocabulary ids. A flat layout may also cut the head per frame
position (`heads[j]`: the columns graph `head.{j}` computes, covering what position j
may sample): a step then computes 4,097 logits instead of the whole head.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BundleError


@dataclass(frozen=True)
class TokenLayout:
    kind: str  # "depth" | "flat"
    n_codebooks: int  # K: codes per frame
    codebook_size: int  # codes per codebook (the codec's)
    tokens_per_frame: int  # backbone positions per frame: 1 (depth) or K (flat)
    logits_offset: int  # vocabulary id of logits column 0
    logits_size: int  # columns of the backbone's logits
    allowed: tuple[tuple[int, int], ...]  # per frame position (flat) or per codebook (depth): [lo, hi) columns
    stop_columns: tuple[int, ...] = ()  # flat: columns that end the speech at j == 0
    eos: str = "column"  # depth: "column" (codebook-0 logits column `eos_column`) | "zero_frame"
    eos_column: int = -1
    depth_prime: int = 0  # depth decoder positions before the first sampled codebook (CSM: 1)
    heads: tuple[tuple[int, int], ...] = ()  # flat: per frame position, the [lo, hi) columns of graph head.{j}

    @property
    def depth_positions(self) -> int:
        """Depth-decoder calls per frame: one per codebook after the first, plus the priming ones."""
        return self.n_codebooks - 1 + self.depth_prime

    def token_id(self, j: int, code: int) -> int:
        """flat: the vocabulary id that carries `code` at frame position j."""
        return self.logits_offset + self.allowed[j][0] + code

    @classmethod
    def reference(cls, n_codebooks: int, codebook_size: int) -> "TokenLayout":
        """The reference family: codebook-0 logits over C codes plus an end-of-speech column C."""
        return cls("depth", n_codebooks, codebook_size, 1, 0, codebook_size + 1,
                   ((0, codebook_size),) * n_codebooks, eos="column", eos_column=codebook_size)

    def to_dict(self) -> dict:
        """The manifest's `layout` block (K and C live in its `constants`)."""
        return {"kind": self.kind, "tokens_per_frame": self.tokens_per_frame, "logits_offset": self.logits_offset,
                "logits_size": self.logits_size, "allowed": [list(a) for a in self.allowed],
                "stop_columns": list(self.stop_columns), "eos": self.eos, "eos_column": self.eos_column,
                "depth_prime": self.depth_prime, "heads": [list(h) for h in self.heads]}

    @classmethod
    def from_dict(cls, d: dict, n_codebooks: int, codebook_size: int, where: str = "the manifest") -> "TokenLayout":
        try:
            layout = cls(d["kind"], n_codebooks, codebook_size, int(d["tokens_per_frame"]),
                         int(d["logits_offset"]), int(d["logits_size"]),
                         tuple((int(lo), int(hi)) for lo, hi in d["allowed"]),
                         tuple(int(c) for c in d.get("stop_columns", ())), d.get("eos", "column"),
                         int(d.get("eos_column", -1)), int(d.get("depth_prime", 0)),
                         tuple((int(lo), int(hi)) for lo, hi in d.get("heads", ())))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: the layout block is malformed ({e!r}); rebuild the bundle with "
                              "`cadenza export`") from None
        layout.check(where)
        return layout

    def check(self, where: str = "the manifest") -> None:
        """BundleError naming the field unless the layout is self-consistent."""
        problems = []
        if not 1 <= self.logits_size <= 1 << 20 or not 1 <= self.tokens_per_frame <= 64 or self.depth_prime > 4:
            problems.append(f"logits_size {self.logits_size}, tokens_per_frame {self.tokens_per_frame} or "
                            f"depth_prime {self.depth_prime} out of range")
        if self.kind not in ("depth", "flat"):
            problems.append(f"kind {self.kind!r} is not depth or flat")
        if self.kind == "flat" and (self.tokens_per_frame != self.n_codebooks or len(self.allowed) != self.n_codebooks):
            problems.append("a flat layout needs tokens_per_frame == n_codebooks == len(allowed)")
        if self.kind == "depth" and (self.tokens_per_frame != 1 or self.eos not in ("column", "zero_frame")):
            problems.append("a depth layout needs tokens_per_frame == 1 and eos 'column' or 'zero_frame'")
        for lo, hi in self.allowed:
            if not 0 <= lo < hi <= self.logits_size or hi - lo != self.codebook_size:
                problems.append(f"allowed range [{lo}, {hi}) is not codebook_size wide inside the logits")
                break
        if any(not 0 <= c < self.logits_size for c in self.stop_columns):
            problems.append("a stop column lies outside the logits")
        if self.eos == "column" and self.kind == "depth" and not 0 <= self.eos_column < self.logits_size:
            problems.append("eos_column lies outside the logits")
        if self.heads:
            if self.kind != "flat" or len(self.heads) != self.tokens_per_frame:
                problems.append("heads: one column range per frame position of a flat layout")
            elif any(not (0 <= lo <= a and b <= hi <= self.logits_size) for (lo, hi), (a, b) in zip(self.heads, self.allowed)):
                problems.append("a head range does not cover its position's allowed columns")
            elif any(not self.heads[0][0] <= c < self.heads[0][1] for c in self.stop_columns):
                problems.append("head 0 does not cover the stop columns")
        if problems:
            raise BundleError(f"{where}: invalid token layout: {'; '.join(problems)}; rebuild the bundle")
