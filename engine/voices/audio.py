"""Voice samples in: decode any file soundfile reads, check it, and condition it for the encoders.

`load_audio(path, 24_000)` returns float32 mono PCM at the bundle's rate plus an
`AudioInfo`. The steps, in order (`prepare_pcm` runs steps 3-9 on an array):

1. read the bytes (at most `MAX_FILE_BYTES`) and hash them (SHA-256);
2. decode with soundfile; an unreadable file is refused naming what it looks like;
3. refuse NaN / inf samples;
4. refuse clipping: per channel, more than `CLIP_FRACTION` of the non-quiet
   samples within 0.1 % of the channel's peak (a hard-clipped signal sits on
   its rails; natural audio touches its peak for a handful of samples);
5. mix to mono (channel mean) and remove DC; refuse silence (peak below -80 dBFS);
6. resample with soxr (HQ) to `target_sr`;
7. trim leading / trailing silence: 10 ms frames below -40 dB of the loudest
   frame, keeping a 50 ms margin; refuse under `min_seconds` or over `max_seconds`;
8. refuse noise: the long-term spectrum between 150 Hz and 3.5 kHz is flat
   (spectral flatness above `NOISE_FLATNESS`; white or clipped noise measures
   about 0.9, voiced speech well under 0.3);
9. normalise loudness: active frames to -23 dBFS RMS, peak at most 0.99.

Every refusal is a `VoiceError` naming the source and what to do.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import VoiceError

MAX_FILE_BYTES = 96 << 20
MIN_SECONDS, MAX_SECONDS = 1.0, 60.0
RAW_SECONDS_FACTOR = 4  # files over 4x max_seconds are refused before decoding (silence trims later)
MAX_DECODED_SAMPLES = 24_000_000  # frames x channels ever decoded: 4 x 60 s of 48 kHz stereo (92 MB float32)
MAX_CHANNELS, MIN_RATE, MAX_RATE = 8, 1_000, 384_000
SILENCE_PEAK = 1e-4  # -80 dBFS
CLIP_FRACTION = 0.05
TRIM_DB, FRAME_S, MARGIN_S = -40.0, 0.010, 0.050
NOISE_FLATNESS, NOISE_BAND = 0.7, (150.0, 3500.0)
TARGET_RMS_DB, MAX_PEAK = -23.0, 0.99
CONVERT_HINT = "convert it with `ffmpeg -i IN -ac 1 OUT.wav`"


@dataclass(frozen=True)
class AudioInfo:
    """Where a prepared sample came from and what was done to it."""

    source: str
    sha256: str  # of the file's bytes (or of the array's float32 bytes)
    sample_rate: int  # of the source
    channels: int
    source_seconds: float
    seconds: float  # after trimming, at the target rate
    trimmed_start_s: float
    trimmed_end_s: float
    gain_db: float
    format: str | None = None
    subtype: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_audio(path_or_file, target_sr: int, *, min_seconds: float = MIN_SECONDS,
               max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, AudioInfo]:
    """Read a voice sample: mono float32 PCM at `target_sr`, trimmed, checked and level-normalised.

    Args:
        path_or_file: a path, or a binary file object, of any format soundfile reads (WAV, FLAC, OGG, MP3...).
        target_sr: the bundle's sample rate (24 kHz for the reference family).
        min_seconds / max_seconds: bounds on the sample after trimming silence.
    Returns:
        (pcm float32 [N], AudioInfo).
    Raises:
        VoiceError: unreadable or non-audio file, NaN/inf, clipped, silent, noise, too short or too long.
    Example:
        >>> pcm, info = load_audio("me.wav", 24_000)
    """
    import soundfile as sf

    label = _label(path_or_file)
    data = _read_bytes(path_or_file, label)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr, channels, frames, fmt, subtype = f.samplerate, f.channels, f.frames, f.format, f.subtype
            _check_header(label, sr, channels, frames, max_seconds)
            x = _decode_capped(f, label, channels)  # [N, C] float32
    except VoiceError:
        raise
    except (sf.SoundFileError, RuntimeError, TypeError) as e:
        why = getattr(e, "error_string", e)
        raise VoiceError(f"{label} is not audio soundfile can read: it looks like {describe_bytes(data)} ({why}); "
                         f"give a WAV, FLAC or OGG recording, or {CONVERT_HINT}") from None
    pcm, info = prepare_pcm(x, sr, target_sr, min_seconds=min_seconds, max_seconds=max_seconds, label=label)
    return pcm, AudioInfo(**{**info.to_dict(), "sha256": hashlib.sha256(data).hexdigest(),
                             "format": fmt, "subtype": subtype, "channels": channels})


def prepare_pcm(x: np.ndarray, sr: int, target_sr: int, *, min_seconds: float = MIN_SECONDS,
                max_seconds: float = MAX_SECONDS, label: str = "the sample") -> tuple[np.ndarray, AudioInfo]:
    """Steps 3-9 of the module docstring on an array: [N] mono or [N, C] (soundfile's layout), any dtype."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise VoiceError(f"{label} has no audio samples (shape {x.shape}); give a recording of 1-{max_seconds:g} s")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise VoiceError(f"{label}: sample rate must be a positive int, got {sr!r}")
    if x.size > MAX_DECODED_SAMPLES:
        raise VoiceError(f"{label} has {x.size} samples; voice samples are limited to {MAX_DECODED_SAMPLES}: "
                         "cut a 5-30 s clip")
    x = np.ascontiguousarray(x, np.float32)
    digest = hashlib.sha256(x.tobytes()).hexdigest()
    if not np.isfinite(x).all():
        raise VoiceError(f"{label} contains NaN or infinite samples; re-export the recording")
    _check_clipping(x, label)
    mono = x.mean(axis=1, dtype=np.float64)
    mono -= mono.mean()  # DC offset (some microphones) would fool the silence trimmer
    if np.abs(mono).max() < SILENCE_PEAK:
        raise VoiceError(f"{label} is silent (peak below {20 * np.log10(SILENCE_PEAK):.0f} dBFS); "
                         "record the voice closer to the microphone")
    y = _resample(mono, int(sr), target_sr)
    start, end, active = _speech_bounds(y, target_sr)
    y = y[start:end]
    secs = len(y) / target_sr
    if secs < min_seconds:
        raise VoiceError(f"{label} has {secs:.2f} s of sound after trimming silence; a voice sample needs at "
                         f"least {min_seconds:g} s of speech (5-30 s works best)")
    if secs > max_seconds:
        raise VoiceError(f"{label} has {secs:.1f} s of speech; voice samples are limited to {max_seconds:g} s: "
                         "cut a 5-30 s clip")
    _check_noise(y, target_sr, label)
    y, gain_db = _normalise(y, active[start:end])
    info = AudioInfo(source=label, sha256=digest, sample_rate=int(sr), channels=x.shape[1],
                     source_seconds=x.shape[0] / sr, seconds=secs, trimmed_start_s=start / target_sr,
                     trimmed_end_s=(len(active) - end) / target_sr, gain_db=gain_db)
    return np.ascontiguousarray(y, np.float32), info


# --- reading -------------------------------------------------------------------
def _label(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return str(getattr(src, "name", "<file object>"))


def _read_bytes(src, label: str) -> bytes:
    """At most MAX_FILE_BYTES + 1 bytes of a regular file (or a binary file object)."""
    try:
        if isinstance(src, (str, os.PathLike)):
            fd = os.open(src, os.O_RDONLY)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise VoiceError(f"{label} is not a regular file (a directory or a device); give an audio file")
                data = f.read(MAX_FILE_BYTES + 1)
        else:
            data = src.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise VoiceError(f"{label}: no such file") from None
    except (OSError, AttributeError) as e:
        raise VoiceError(f"{label} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(data, bytes):
        raise VoiceError(f"{label} must be opened in binary mode ('rb')")
    if not data:
        raise VoiceError(f"{label} is empty (0 bytes); give a WAV, FLAC or OGG recording")
    if len(data) > MAX_FILE_BYTES:
        raise VoiceError(f"{label} is over {MAX_FILE_BYTES >> 20} MiB; cut a 5-30 s clip")
    return data


def _check_header(label: str, sr: int, channels: int, frames: int, max_seconds: float) -> None:
    """Refuse from the header alone what would decode to too much audio."""
    if not (1 <= channels <= MAX_CHANNELS and MIN_RATE <= sr <= MAX_RATE):
        raise VoiceError(f"{label} has {channels} channels at {sr} Hz; voice samples take 1-{MAX_CHANNELS} channels "
                         f"at {MIN_RATE}-{MAX_RATE} Hz: {CONVERT_HINT}")
    if frames > RAW_SECONDS_FACTOR * max_seconds * sr or frames * channels > MAX_DECODED_SAMPLES:
        raise VoiceError(f"{label} is {frames / sr:.1f} s of {channels}-channel audio; voice samples are limited to "
                         f"{max_seconds:g} s of speech: cut a 5-30 s clip")


def _decode_capped(f, label: str, channels: int) -> np.ndarray:
    """Decode in blocks, refusing the file once it yields more samples than the cap (a header may lie)."""
    blocks, total = [], 0
    for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
        total += block.size
        if total > MAX_DECODED_SAMPLES:
            raise VoiceError(f"{label} decodes to more than {MAX_DECODED_SAMPLES} samples; cut a 5-30 s clip")
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)


_MAGIC = [(b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive (or .docx / .xlsx)"),
          (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"\x1f\x8b", "gzip-compressed data"), (b"\x1aE\xdf\xa3", "a Matroska / WebM container"),
          (b"\x7fELF", "an executable")]


def describe_bytes(data: bytes) -> str:
    """What a file that is not readable audio looks like: 'UTF-8 text ("hello...")', 'a PNG image', ..."""
    if not data:
        return "an empty file"
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    if data[4:8] == b"ftyp":
        return "an MP4 / M4A container (AAC, which soundfile does not decode)"
    if data.startswith(b"RIFF"):
        return f"a RIFF file of type {data[8:12]!r} (a damaged or unsupported WAV)"
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        text = head[:e.start].decode("utf-8") if e.start > len(head) - 4 else None
    if text is not None and sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * max(1, len(text)):
        snippet = " ".join(text.split())[:40]
        return f"UTF-8 text ({snippet!r}{'...' if len(text) > 40 else ''})"
    return f"binary data of {len(data)} bytes starting {data[:8].hex(' ')}"


# --- checks and conditioning -----------------------------------------------------
def _check_clipping(x: np.ndarray, label: str) -> None:
    for c in range(x.shape[1]):
        a = np.abs(x[:, c])
        peak = a.max()
        if peak < SILENCE_PEAK:
            continue
        loud = a[a > 0.01 * peak]
        frac = np.count_nonzero(loud >= 0.999 * peak) / len(loud)
        if frac > CLIP_FRACTION:
            raise VoiceError(f"{label} is clipped: {frac:.0%} of the samples of channel {c} sit at its peak "
                             f"({peak:.3f}); record again with a lower input gain")


def _resample(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    if sr == target_sr:
        return x
    import soxr

    return soxr.resample(x, sr, target_sr, quality="HQ")


def _frame_energy(y: np.ndarray, flen: int) -> np.ndarray:
    n = -(-len(y) // flen) * flen
    padded = np.zeros(n)
    padded[:len(y)] = y
    return (padded.reshape(-1, flen) ** 2).mean(axis=1)  # [n / flen]


def _speech_bounds(y: np.ndarray, sr: int) -> tuple[int, int, np.ndarray]:
    """(start, end) sample bounds of the sound (with margin) and a per-sample active mask."""
    flen = max(1, int(round(FRAME_S * sr)))
    e = _frame_energy(y, flen)
    on = e >= e.max() * 10 ** (TRIM_DB / 10)
    idx = np.flatnonzero(on)
    margin = int(round(MARGIN_S / FRAME_S))
    start = max(0, idx[0] - margin) * flen
    end = min(len(y), (idx[-1] + 1 + margin) * flen)
    return start, end, np.repeat(on, flen)[:len(y)]


def spectral_flatness(y: np.ndarray, sr: int, band: tuple[float, float] = NOISE_BAND, nfft: int = 1024) -> float:
    """Flatness (geometric / arithmetic mean) of the long-term power spectrum within `band`: 1 = white."""
    n = len(y) // nfft
    if n == 0:
        return 0.0
    frames = y[:n * nfft].reshape(n, nfft) * np.hanning(nfft)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)  # [nfft / 2 + 1]
    f = np.fft.rfftfreq(nfft, 1 / sr)
    p = power[(f >= band[0]) & (f <= min(band[1], 0.45 * sr))] + 1e-20
    return float(np.exp(np.log(p).mean()) / p.mean())


def _check_noise(y: np.ndarray, sr: int, label: str) -> None:
    flat = spectral_flatness(y, sr)
    if flat > NOISE_FLATNESS:
        raise VoiceError(f"{label} sounds like noise, not a voice (spectral flatness {flat:.2f} > "
                         f"{NOISE_FLATNESS}); record speech in a quiet room")


def _normalise(y: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, float]:
    rms = np.sqrt((y[active] ** 2).mean()) if active.any() else np.sqrt((y ** 2).mean())
    gain = min(10 ** (TARGET_RMS_DB / 20) / rms, MAX_PEAK / np.abs(y).max())
    return y * gain, float(20 * np.log10(gain))


__all__ = ["AudioInfo", "load_audio", "prepare_pcm", "describe_bytes", "spectral_flatness", "MIN_SECONDS",
           "MAX_SECONDS"]
