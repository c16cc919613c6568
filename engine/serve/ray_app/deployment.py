"""The replica: the same ASGI app as `cadenza serve`, one engine per bundle, behind Ray Serve's proxy.

Ray Serve builds the app in each replica (`__serve_build_asgi_app__`); the replica
is ready once its engines are loaded and warm (`create_app(wait_loaded=True)`), so
the proxy never routes a request to a replica that cannot serve it. At shutdown
Ray stops routing to the replica, waits for its requests (up to `drain_timeout`),
then the app's lifespan cancels what is left and closes the engines.
"""
from __future__ import annotations

import logging
import os

from ray import serve

from .args import ServeArgs

log = logging.getLogger("cadenza.serve")

REPLICA_HEADER = b"x-cadenza-replica"


class ReplicaHeader:
    """ASGI middleware: every HTTP response names the replica that served it (`X-Cadenza-Replica`)."""

    def __init__(self, app, replica: str):
        self.app, self.value = app, replica.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.value)]}
            await send(message)

        await self.app(scope, receive, tagged)


@serve.ingress()
class CadenzaReplica:
    """One replica of the deployment (see the module docstring). `args`: `ServeArgs` as a dict."""

    def __init__(self, args: dict):
        self.args = ServeArgs.model_validate(args)
        self.server = None

    def __serve_build_asgi_app__(self):
        from ..app import create_app
        from ..state import ServeConfig
        from .metrics import mirror_to_ray

        a = self.args
        key = None
        if a.api_key_env:
            key = os.environ.get(a.api_key_env)
            if not key:
                raise RuntimeError(f"api_key_env {a.api_key_env}: that environment variable is empty or unset "
                                   "on this replica's node")
        config = ServeConfig(api_key=key, max_body_bytes=a.max_body_bytes, max_upload_bytes=a.max_upload_bytes,
                             max_input_chars=a.max_input_chars, drain_s=a.drain_timeout)
        app = create_app(bundles=a.bundle, config=config, engine_kwargs=a.engine_kwargs(), wait_loaded=True)
        replica = serve.get_replica_context().replica_id.unique_id
        app.add_middleware(ReplicaHeader, replica=replica)
        self.server = app.state.cadenza
        mirror_to_ray(self.server.metrics, replica)
        log.info("replica %s: serving %s", replica, ", ".join(sorted(a.bundle)))
        return app

    def check_health(self) -> None:
        """Ray's periodic health check: a replica whose engines failed to load, or whose scheduler
        thread is gone (the engine closed), is unhealthy; Ray replaces it."""
        models = self.server.models if self.server is not None else None
        if models is None or models.error:
            raise RuntimeError(f"the engines did not load: {models.error if models else 'no app'}")
        for name, engine in models.engines.items():
            if not engine.scheduler.thread.is_alive():
                raise RuntimeError(f"the engine of {name!r} has stopped")


def build_app(args: ServeArgs | dict):
    """The Ray Serve application (`serve.run(build_app(args))`); `args`: `ServeArgs` or its fields."""
    args = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args)
    deployment = serve.deployment(CadenzaReplica).options(**args.deployment_options())
    return deployment.bind(args.model_dump())


def app_builder(args: dict):
    """For `serve run cadenza.engine.serve.ray_app:app_builder bundle=bundles/tiny replicas=2 ...`
    and the `args:` of a `serve deploy` config (the fields of `ServeArgs`)."""
    return build_app(args)


__all__ = ["CadenzaReplica", "ReplicaHeader", "build_app", "app_builder", "REPLICA_HEADER"]
