"""The length policy: how many frames a text segment may take (the manifest's `length` block).

End of speech is refused before `min_factor x` the expected frames, and a segment
stops at `max_factor x` the expected frames `+ extra` (at most `max_frames`), where
the expected frames come from `chars_per_second` of speech. The reference family's
random weights rely on this for a plausible length (0.8x / 1.6x + 4); trained
families end their speech themselves, and the cap only stops a runaway segment.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import BundleError


@dataclass(frozen=True)
class LengthPolicy:
    chars_per_second: float = 14.0
    min_factor: float = 0.8
    max_factor: float = 1.6
    extra: int = 4
    max_frames: int = 0  # 0: no cap beyond the factors

    def bounds(self, text: str, frame_rate: float) -> tuple[int, int]:
        """(min_frames, max_frames) for one segment of `text`."""
        expected = max(len(text), 1) / self.chars_per_second * frame_rate
        lo = max(2, math.floor(self.min_factor * expected)) if self.min_factor > 0 else 0
        return lo, self.cap(len(text), frame_rate)

    def cap(self, n_chars: int, frame_rate: float) -> int:
        hi = max(4, math.ceil(self.max_factor * (max(n_chars, 1) / self.chars_per_second * frame_rate)) + self.extra)
        return min(hi, self.max_frames) if self.max_frames else hi

    def longest_text(self, budget: int, frame_rate: float, positions_per_frame: int = 1, overhead: int = 2) -> int:
        """The most UTF-8 bytes a segment may have so that its prompt (about one position per byte
        plus `overhead` fixed ids) and its frame cap fit `budget` positions (0 if none fits).

        Bytes bound characters and tokens from above, so a text of that many bytes always fits."""
        def need(n: int) -> int:
            return n + overhead + self.cap(n, frame_rate) * positions_per_frame

        n = max(0, int((budget - overhead - 4) / (1 + self.max_factor * frame_rate * positions_per_frame
                                                 / self.chars_per_second)))
        while need(n + 1) <= budget:
            n += 1
        while n > 0 and need(n) > budget:
            n -= 1
        return n

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "the manifest") -> "LengthPolicy":
        try:
            p = cls(float(d["chars_per_second"]), float(d["min_factor"]), float(d["max_factor"]), int(d["extra"]),
                    int(d.get("max_frames", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: the length block is malformed ({e!r}); rebuild the bundle") from None
        if p.chars_per_second <= 0 or p.max_factor <= 0 or p.min_factor < 0 or p.extra < 0 or p.max_frames < 0:
            raise BundleError(f"{where}: the length policy {p} is out of range; rebuild the bundle")
        return p
