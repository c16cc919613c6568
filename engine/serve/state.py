"""What the server holds: its limits (`ServeConfig`), the loaded models (`Models`) and the
live speech streams (`Live`, for draining at shutdown)."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import ApiError

log = logging.getLogger("cadenza.serve")


@dataclass(frozen=True)
class ServeConfig:
    """The server's limits and settings.

    api_key: the bearer token every `/v1` route needs (None: no auth; loopback use only).
    max_body_bytes: JSON request bodies (413 beyond). max_upload_bytes: voice sample uploads.
    max_input_chars: `input` of /v1/audio/speech (413 beyond; OpenAI's limit is 4096).
    max_ws_chars: text of one WebSocket utterance. drain_s: SIGTERM waits this long for
    in-flight streams, then cancels them. retry_after_s: the `Retry-After` of 429 / 503.
    """

    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 16 << 20
    max_input_chars: int = 4096
    max_ws_chars: int = 100_000
    drain_s: float = 30.0
    retry_after_s: int = 1


class Models:
    """name -> Engine. Engines are given ready-made (`engines`) or loaded from bundle directories
    (`bundles`) on a thread at startup, so `/health` answers while `/ready` waits."""

    def __init__(self, engines: dict | None = None, bundles: dict[str, str | Path] | None = None,
                 engine_kwargs: dict | None = None):
        self.engines: dict = dict(engines or {})
        self.bundles = {k: Path(v) for k, v in (bundles or {}).items()}
        self.engine_kwargs = dict(engine_kwargs or {})
        self.owned: list = []  # engines this object loaded (and closes)
        self.error: str | None = None
        self._loaded = threading.Event()
        if not self.bundles:
            self._loaded.set()
        if not self.engines and not self.bundles:
            raise ValueError("give at least one engine or bundle to serve")

    def start(self, on_loaded=None) -> None:
        """Load the bundles on a thread; `on_loaded(name, engine)` for each."""
        def load():
            from ..api import Engine

            try:
                for name, path in self.bundles.items():
                    t = time.perf_counter()
                    e = Engine.load(path, **self.engine_kwargs)  # warm: its warm-up stream ran
                    self.owned.append(e)
                    self.engines[name] = e
                    if on_loaded is not None:
                        on_loaded(name, e)
                    log.info("loaded %s from %s in %.1f s (%d slots)", name, path, time.perf_counter() - t, e.slots)
            except Exception as e:  # noqa: BLE001 - reported by /ready and the log
                self.error = f"{type(e).__name__}: {e}"
                log.error("loading the models failed: %s", self.error)
            finally:
                self._loaded.set()

        if self.bundles:
            threading.Thread(target=load, name="cadenza-serve-load", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self.error is None

    def wait(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout) and self.error is None

    def get(self, name) -> object:
        """The engine serving `name`: 404 for an unknown name, 503 while loading."""
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model must be the name of a loaded model (GET /v1/models)", "invalid_model", "model")
        engine = self.engines.get(name)
        if engine is not None:
            return engine
        if name in self.bundles and not self._loaded.is_set():
            raise ApiError(503, f"model {name!r} is still loading; retry shortly", "model_loading", "model",
                           {"Retry-After": "1"})
        known = ", ".join(sorted(set(self.engines) | set(self.bundles))) or "none"
        raise ApiError(404, f"model {name!r} is not loaded here; loaded models: {known}", "model_not_found", "model")

    def close(self) -> None:
        self._loaded.wait(600)
        for e in self.owned:
            e.close()
        self.owned.clear()


class Live:
    """The speech streams in flight (HTTP responses and WebSocket utterances), for draining."""

    def __init__(self):
        self._streams: set = set()
        self.cut: set = set()  # streams cancelled by `cancel_all`: their end is an error, not a finish
        self._lock = threading.Lock()
        self.draining = False
        # Blocking waits for chunks run here, never on the event loop; threads start on demand.
        self.executor = ThreadPoolExecutor(max_workers=512, thread_name_prefix="cadenza-serve-io")

    def add(self, stream) -> None:
        with self._lock:
            self._streams.add(stream)

    def discard(self, stream) -> None:
        with self._lock:
            self._streams.discard(stream)
            self.cut.discard(stream)

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)

    def cancel_all(self) -> int:
        """Cancel every stream in flight (the drain deadline passed); returns how many."""
        with self._lock:
            streams = list(self._streams)
            self.cut.update(streams)
        for s in streams:
            s.close(timeout=0)
        return len(streams)

    def close(self) -> None:
        self.cancel_all()
        self.executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["ServeConfig", "Models", "Live"]
