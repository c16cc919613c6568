"""`cadenza serve`: the OpenAI-compatible HTTP / WebSocket server (needs the `[server]` extra).

SIGTERM or Ctrl-C: new requests get 503 and `/ready` turns 503 at once; streams in
flight finish, up to `--drain-timeout` seconds, then are cancelled; then the engines
close and the process exits 0. A second signal exits at once.

`--ray`: the same app as replicas of a Ray Serve deployment (the `[ray]` extra;
`cadenza.engine.serve.ray_app`, imported only then).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .common import CliError


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible speech API over HTTP and WebSocket")
    p.add_argument("--bundle", action="append", required=True, metavar="[NAME=]DIR",
                   help="a bundle to serve (repeatable); its model name is NAME or the directory's name")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="the environment variable holding the API key clients must send as a bearer token")
    p.add_argument("--max-streams", type=int, default=16, help="concurrent streams per model (KV slots)")
    p.add_argument("--max-queue", type=int, default=32, help="streams waiting for a slot before 429")
    p.add_argument("--queue-timeout", type=float, default=10.0, help="seconds a stream may wait for a slot")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per engine")
    p.add_argument("--backend", default="ort")
    p.add_argument("--voice-store", default=None, help="the voice store directory (shared by the models)")
    p.add_argument("--max-input-chars", type=int, default=4096)
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--max-upload-bytes", type=int, default=16 << 20)
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds in-flight streams get at SIGTERM")
    p.add_argument("--log-level", default="info")
    r = p.add_argument_group("Ray Serve (needs the [ray] extra; docs/ray.md)")
    r.add_argument("--ray", action="store_true",
                   help="serve as replicas of a Ray Serve deployment behind Ray's HTTP proxy (--host, --port)")
    r.add_argument("--replicas", type=int, default=None, help="a fixed number of replicas (default 1)")
    r.add_argument("--min-replicas", type=int, default=None, help="autoscaling: the fewest replicas (default 1)")
    r.add_argument("--max-replicas", type=int, default=None,
                   help="autoscale on ongoing requests between --min-replicas and this many replicas")
    r.add_argument("--target-streams", type=float, default=None,
                   help="autoscaling: ongoing requests per replica to aim for (default 3/4 of --max-streams)")
    r.add_argument("--replica-cpus", type=float, default=None,
                   help="CPUs Ray reserves per replica (default 1; 0 or a fraction to pack replicas)")
    r.add_argument("--address", default=None, metavar="auto|HOST:PORT|ray://HOST:PORT",
                   help="the Ray cluster to deploy on (default: start a local cluster for this process)")
    p.set_defaults(func=run)


RAY_ONLY = ("replicas", "min_replicas", "max_replicas", "target_streams", "replica_cpus", "address")


def parse_bundles(specs: list[str]) -> dict[str, Path]:
    """`DIR` or `NAME=DIR` -> {name: dir}; names must be unique and the directories exist."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        path = Path(path if sep else spec)
        name = name if sep else path.resolve().name
        if not name or "/" in name:
            raise CliError(f"--bundle {spec!r}: the model name must be non-empty and have no '/'")
        if not (path / "manifest.json").is_file():
            raise CliError(f"--bundle {spec!r}: {path} has no manifest.json; build one with `cadenza export`")
        if name in out:
            raise CliError(f"--bundle {spec!r}: the model name {name!r} is given twice; use NAME=DIR")
        out[name] = path
    return out


def run(args) -> int:
    if args.ray:
        return run_ray(args)
    given = [f"--{k.replace('_', '-')}" for k in RAY_ONLY if getattr(args, k) is not None]
    if given:
        raise CliError(f"{', '.join(given)} need --ray (replicas on Ray Serve)")
    try:
        import uvicorn

        from ..serve.app import create_app
        from ..serve.state import ServeConfig
    except ImportError as e:
        raise CliError(f"cadenza serve needs the server extra ({e.name} is missing): pip install 'cadenza-tts[server]'")
    key = _api_key(args)
    config = ServeConfig(api_key=key, max_body_bytes=args.max_body_bytes, max_upload_bytes=args.max_upload_bytes,
                         max_input_chars=args.max_input_chars, drain_s=args.drain_timeout)
    engine_kwargs = dict(backend=args.backend, max_streams=args.max_streams, max_queue=args.max_queue,
                         queue_timeout=args.queue_timeout, threads=args.threads, voice_store=args.voice_store)
    import logging

    logging.basicConfig(format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("cadenza").setLevel(args.log_level.upper())
    app = create_app(bundles=parse_bundles(args.bundle), config=config, engine_kwargs=engine_kwargs)
    cfg = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, ws_max_size=1 << 20,
                         lifespan="on", timeout_graceful_shutdown=5)
    _draining_server()(cfg, app.state.cadenza).run()
    return 0


def _api_key(args) -> str | None:
    if not args.api_key_env:
        return None
    key = os.environ.get(args.api_key_env)
    if not key:
        raise CliError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
    return key


def run_ray(args) -> int:
    """`cadenza serve --ray`: the same app as a Ray Serve deployment (see ray_app/driver.py)."""
    try:
        import uvicorn  # noqa: F401 - the replicas run the [server] app

        from ..serve.ray_app import ServeArgs
        from ..serve.ray_app import driver
    except ImportError as e:
        extra = "server" if e.name in ("uvicorn", "starlette", "prometheus_client") else "ray"
        raise CliError(f"cadenza serve --ray needs the {extra} extra ({e.name} is missing): "
                       f"pip install 'cadenza-tts[{extra}]'")
    _api_key(args)  # the replicas read it from their environment (forwarded to them)
    bundles = {name: str(path) for name, path in parse_bundles(args.bundle).items()}
    optional = ("replicas", "min_replicas", "max_replicas", "target_streams", "replica_cpus", "threads",
                "voice_store", "api_key_env")  # left to ServeArgs' defaults when not given
    sargs = ServeArgs(bundle=bundles, max_streams=args.max_streams, max_queue=args.max_queue,
                      queue_timeout=args.queue_timeout, backend=args.backend, max_input_chars=args.max_input_chars,
                      max_body_bytes=args.max_body_bytes, max_upload_bytes=args.max_upload_bytes,
                      drain_timeout=args.drain_timeout,
                      **{k: getattr(args, k) for k in optional if getattr(args, k) is not None})
    return driver.run(sargs, address=args.address, host=args.host, port=args.port)


def _draining_server():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, with a drain before its shutdown: the first signal makes the app answer
        503 and waits for in-flight streams (cancelled at the deadline); then uvicorn shuts down."""

        def __init__(self, config, cadenza):
            super().__init__(config)
            self.cadenza = cadenza
            self.deadline = self.grace = None

        def handle_exit(self, sig, frame) -> None:
            if self.deadline is None and not self.should_exit:
                self.deadline = time.monotonic() + self.cadenza.config.drain_s
                self.cadenza.begin_drain()
                return
            super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            if self.deadline is not None and not self.should_exit:
                live, now = self.cadenza.live, time.monotonic()
                if not len(live) or (self.grace is not None and now >= self.grace):
                    self.should_exit = True
                elif self.grace is None and now >= self.deadline:
                    live.cancel_all()  # the deadline: in-flight streams end now
                    self.grace = now + 2.0  # their responses end within an engine step
            return await super().on_tick(counter)

    return DrainingServer

