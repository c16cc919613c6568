"""Helpers of the server tests (tests/engine/serve): what the engine itself would say, and decoders."""
from __future__ import annotations

import io
import socket
import struct
import threading
import time

import numpy as np
import soundfile as sf

TEXT = "Hello there, this is Cadenza over HTTP."


def expected_pcm16(engine, text: str = TEXT, **sampling) -> np.ndarray:
    """int16 [N]: what `engine.synthesize` gives, as the server's 16-bit PCM."""
    pcm = engine.synthesize(text, **sampling).pcm
    return (np.clip(pcm, -1, 1) * 32767).round().astype(np.int16)


def assert_pcm_matches(got: np.ndarray, want: np.ndarray) -> None:
    """Same length; equal to 1 LSB (chunks may be cut elsewhere: float rounding of the codec)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1


def flac_with_length(data: bytes, frames: int) -> bytes:
    """A streamed FLAC (STREAMINFO total samples 0 = unknown) with its total filled in, so that
    libsndfile, which needs the length, reads it (ffmpeg and libFLAC read it as it is)."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    packed = int.from_bytes(data[18:26], "big")  # sample rate 20 | channels 3 | bps 5 | total samples 36
    assert packed & ((1 << 36) - 1) == 0, "the stream's length was expected to be unknown"
    return data[:18] + (packed | frames).to_bytes(8, "big") + data[26:]


def decode(fmt: str, data: bytes, frames: int | None = None) -> tuple[np.ndarray, int]:
    """Response bytes -> (int16 or float samples, sample rate), with soundfile (libsndfile)."""
    if fmt == "pcm":
        return np.frombuffer(data, "<i2"), 24_000
    if fmt == "flac":
        data = flac_with_length(data, frames)
    dtype = "int16" if fmt in ("wav", "flac") else "float32"
    x, sr = sf.read(io.BytesIO(data), dtype=dtype)
    return x, sr


def wav_sizes(data: bytes) -> tuple[int, int]:
    """(RIFF size, data size) of a 44-byte WAV header."""
    return struct.unpack("<I", data[4:8])[0], struct.unpack("<I", data[40:44])[0]


class LiveServer:
    """uvicorn serving `app` on a socket bound to 127.0.0.1:0, in a daemon thread."""

    def __init__(self, app, engine=None):
        import uvicorn

        self.app, self.engine = app, engine
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/audio/speech/ws"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws_max_size=1 << 20)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)

    @property
    def cadenza(self):
        return self.app.state.cadenza

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
