"""Streaming audio encoders: float32 PCM chunks in, bytes of the response format out, per chunk.

| format | container / codec | how it streams |
| --- | --- | --- |
| `pcm` | raw 16-bit little-endian mono at the model's rate | each chunk as it comes |
| `wav` | RIFF/WAVE, 16-bit PCM | a 44-byte header whose RIFF and data sizes are 0xFFFFFFFF (length unknown, the convention of streamed WAV), then each chunk |
| `flac` | FLAC, 16-bit (libsndfile) | frames leave as libFLAC completes its 4096-sample blocks; STREAMINFO's total-samples field stays 0 (unknown), as the format allows for streams |
| `opus` | Ogg/Opus (libsndfile >= 1.2 with its Ogg page latency set to 20 ms) | one Ogg page per chunk |
| `mp3` | MPEG-2 layer III at 24 kHz, constant 160 kbit/s (libsndfile >= 1.1 with LAME) | frames as LAME completes them; starts with the encoder's delay (~1100 samples of silence), no gapless header |

flac / opus / mp3 use libsndfile through soundfile, writing into `_Sink`: a
write-only buffer that passes each new byte on and drops the encoder's
back-patching of already sent headers (the stream cannot be rewound).
"""
from __future__ import annotations

import struct

import numpy as np

FORMATS = ("pcm", "wav", "flac", "opus", "mp3")
MEDIA_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav", "flac": "audio/flac", "opus": "audio/ogg; codecs=opus",
               "mp3": "audio/mpeg"}
_SNDFILE = {"flac": ("FLAC", "PCM_16"), "opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302  # sndfile.h (libsndfile >= 1.2)
_SFC_SET_BITRATE_MODE = 0x1305  # sndfile.h (libsndfile >= 1.1); SF_BITRATE_MODE_CONSTANT = 0
_SFC_SET_COMPRESSION_LEVEL = 0x1301  # 0.0: the highest bit rate (MPEG-2 layer III at 24 kHz: 160 kbit/s)


def pcm16(pcm: np.ndarray) -> bytes:
    """float32 [-1, 1] -> 16-bit little-endian bytes (clipped, rounded)."""
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length (sizes 0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", unknown))


class _Sink:
    """The file object libsndfile writes to: new bytes are collected for the response; a write
    behind the end (a header patched at close) is dropped, since those bytes have left."""

    def __init__(self):
        self.pos = self.end = 0
        self.out: list[bytes] = []

    def write(self, data) -> int:
        data = bytes(data)
        if self.pos == self.end:
            self.out.append(data)
            self.end += len(data)
        self.pos += len(data)
        self.end = max(self.end, self.pos)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.end + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        return b""

    def take(self) -> bytes:
        data, self.out = b"".join(self.out), []
        return data


class Encoder:
    """One response's encoder: `header()`, then `chunk(pcm)` per chunk, then `close()`; each returns
    the bytes ready to send (possibly empty)."""

    def __init__(self, fmt: str, sample_rate: int):
        if fmt not in FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.fmt, self.sample_rate = fmt, sample_rate
        self._sink = self._file = None
        if fmt in _SNDFILE:
            self._open()

    def _open(self) -> None:
        import soundfile as sf

        container, subtype = _SNDFILE[self.fmt]
        self._sink = _Sink()
        self._file = sf.SoundFile(self._sink, "w", samplerate=self.sample_rate, channels=1, format=container,
                                  subtype=subtype)
        if self.fmt == "opus":
            self._command(_SFC_SET_OGG_PAGE_LATENCY_MS, "double*", 20.0)
        elif self.fmt == "mp3":
            self._command(_SFC_SET_BITRATE_MODE, "int*", 0)
            self._command(_SFC_SET_COMPRESSION_LEVEL, "double*", 0.0)

    def _command(self, cmd: int, ctype: str, value) -> None:
        from soundfile import _ffi, _snd

        _snd.sf_command(self._file._file, cmd, _ffi.new(ctype, value), _ffi.sizeof(ctype[:-1]))

    def header(self) -> bytes:
        if self.fmt == "wav":
            return wav_header(self.sample_rate)
        return self._sink.take() if self._sink is not None else b""

    def chunk(self, pcm: np.ndarray) -> bytes:
        if self._file is None:
            return pcm16(pcm)
        self._file.write(np.clip(pcm, -1.0, 1.0))
        return self._sink.take()

    def close(self) -> bytes:
        """The encoder's tail (flushed frames); idempotent."""
        if self._file is None:
            return b""
        f, self._file = self._file, None
        f.close()
        return self._sink.take()


def available() -> dict[str, bool]:
    """Which response formats this libsndfile can encode."""
    import soundfile as sf

    have = sf.available_formats()
    ok = {f: True for f in ("pcm", "wav")}
    for fmt, (container, subtype) in _SNDFILE.items():
        ok[fmt] = container in have and subtype in sf.available_subtypes(container)
    return ok


__all__ = ["Encoder", "FORMATS", "MEDIA_TYPES", "available", "pcm16", "wav_header"]
