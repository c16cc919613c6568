"""The deployment's arguments (`ServeArgs`) and the Ray Serve options they set.

The same fields come from `cadenza serve --ray ...` and from `serve run
cadenza.engine.serve.ray_app:app_builder key=value ...` (strings there, converted
and checked here; an unknown key is an error).
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

APP_NAME = "cadenza"


def parse_bundle_specs(spec: str | list[str]) -> dict[str, str]:
    """`DIR` or `NAME=DIR`, several separated by commas (or a list of them) -> {name: absolute dir}.

    The directories are not checked here: on a cluster they must exist on the nodes that run
    replicas, which need not be the machine that deploys.
    """
    specs = spec if isinstance(spec, list) else [s for s in spec.split(",") if s.strip()]
    out: dict[str, str] = {}
    for s in specs:
        name, sep, path = s.strip().partition("=")
        path = path if sep else name
        name = name if sep else Path(path).resolve().name
        if not name or "/" in name or not path:
            raise ValueError(f"bundle {s!r}: give DIR or NAME=DIR (a name without '/')")
        if name in out:
            raise ValueError(f"bundle {s!r}: the model name {name!r} is given twice; use NAME=DIR")
        out[name] = os.path.abspath(path)
    if not out:
        raise ValueError("give at least one bundle: bundle=DIR or bundle=NAME=DIR,NAME2=DIR2")
    return out


class ServeArgs(BaseModel):
    """What a replica serves and how Ray Serve runs the replicas.

    Replicas: `replicas` fixed, or autoscaling between `min_replicas` and `max_replicas` on
    ongoing requests (target `target_streams` per replica, default 3/4 of `max_streams`).
    Each replica loads its own engine per bundle, with `max_streams` KV slots; Ray sends a
    replica at most `max_streams` requests at a time (`max_ongoing_requests`), holds up to
    `max_queue` more at each proxy, and answers 429 with `Retry-After: 1` beyond that.
    `replica_cpus`: the CPUs Ray reserves per replica (0 on a machine shared with other
    work); the engine's intra-op threads default to it (at least 1). The voice store must be
    one directory every replica reads (on a cluster: shared storage, the same path on every
    node). `api_key_env`: the environment variable a replica reads its API key from.
    """

    model_config = ConfigDict(extra="forbid")

    bundle: dict[str, str]
    replicas: int = Field(1, ge=1)
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    target_streams: float | None = Field(None, gt=0)
    replica_cpus: float = Field(1.0, ge=0)
    max_streams: int = Field(16, ge=1)
    max_queue: int = Field(32, ge=0)
    queue_timeout: float = Field(10.0, gt=0)
    threads: int | None = Field(None, ge=1)
    backend: str = "ort"
    voice_store: str | None = None
    api_key_env: str | None = None
    max_input_chars: int = Field(4096, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1)
    max_upload_bytes: int = Field(16 << 20, ge=1)
    drain_timeout: float = Field(30.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bundles(cls, data):
        if isinstance(data, dict) and isinstance(data.get("bundle"), (str, list)):
            data = {**data, "bundle": parse_bundle_specs(data["bundle"])}
        elif isinstance(data, dict) and isinstance(data.get("bundle"), dict):
            data = {**data, "bundle": {k: os.path.abspath(v) for k, v in data["bundle"].items()}}
        if isinstance(data, dict) and data.get("voice_store"):
            data = {**data, "voice_store": os.path.abspath(data["voice_store"])}
        return data

    @model_validator(mode="after")
    def _replicas(self):
        if self.max_replicas is None and self.min_replicas is not None:
            raise ValueError("min_replicas needs max_replicas (autoscaling); for a fixed count use replicas")
        if self.max_replicas is not None:
            if self.replicas != 1:
                raise ValueError("give replicas (a fixed count) or min_replicas/max_replicas (autoscaling), not both")
            if (self.min_replicas or 0) > self.max_replicas:
                raise ValueError(f"min_replicas {self.min_replicas} is over max_replicas {self.max_replicas}")
        return self

    @property
    def engine_threads(self) -> int:
        return self.threads or max(1, int(self.replica_cpus))

    def engine_kwargs(self) -> dict:
        """`Engine.load` arguments of every bundle of a replica."""
        return dict(backend=self.backend, max_streams=self.max_streams, max_queue=self.max_queue,
                    queue_timeout=self.queue_timeout, threads=self.engine_threads, voice_store=self.voice_store)

    def deployment_options(self) -> dict:
        """`Deployment.options(...)`: replicas or autoscaling, the request limits, resources, drain."""
        from ray.serve.config import BackpressureConfig

        opts = dict(name=APP_NAME, max_ongoing_requests=self.max_streams, max_queued_requests=self.max_queue,
                    backpressure_config=BackpressureConfig(status_code=429, retry_after_s=1),
                    ray_actor_options={"num_cpus": self.replica_cpus},
                    graceful_shutdown_timeout_s=self.drain_timeout,
                    max_constructor_retry_count=3)  # a replica that cannot load its bundles fails fast
        if self.max_replicas is None:
            opts["num_replicas"] = self.replicas
        else:
            lo = 1 if self.min_replicas is None else self.min_replicas
            opts["autoscaling_config"] = {
                "min_replicas": lo, "max_replicas": self.max_replicas, "initial_replicas": max(lo, 1),
                "target_ongoing_requests": self.target_streams or max(1.0, 0.75 * self.max_streams)}
        if self.api_key_env and os.environ.get(self.api_key_env):
            # the key travels to the replicas in their environment, not in their arguments
            opts["ray_actor_options"]["runtime_env"] = {"env_vars": {self.api_key_env: os.environ[self.api_key_env]}}
        return opts


__all__ = ["ServeArgs", "parse_bundle_specs", "APP_NAME"]
