"""`cadenza serve` on Ray Serve: replicas of the engine behind one endpoint (the `[ray]` extra).

    cadenza serve --ray --bundle bundles/tiny --replicas 2                 # a local Ray cluster
    serve run cadenza.engine.serve.ray_app:app_builder bundle=bundles/tiny replicas=2   # any cluster

Each replica runs the same ASGI app as `cadenza serve` (`create_app`) with its own engine
per bundle; Ray Serve's HTTP proxy streams the responses. Modules: `args` (what a
deployment takes, and the Ray Serve options it sets), `deployment` (the replica and the
application builder), `metrics` (the server's metrics mirrored into Ray's, summed over
replicas), `proxy` (OpenAI's error shape for the errors Ray's proxy answers itself),
`driver` (`cadenza serve --ray`). Nothing outside this package imports ray.
See docs/ray.md.
"""
from __future__ import annotations

from .args import APP_NAME, ServeArgs, parse_bundle_specs
from .deployment import REPLICA_HEADER, CadenzaReplica, app_builder, build_app

__all__ = ["app_builder", "build_app", "CadenzaReplica", "ServeArgs", "parse_bundle_specs", "APP_NAME",
           "REPLICA_HEADER"]
