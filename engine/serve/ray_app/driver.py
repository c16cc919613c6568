"""`cadenza serve --ray`: connect to (or start) a Ray cluster, deploy, wait for a signal, tear down.

`address=None` starts a new local cluster for this process alone (never joins one
that happens to run here): no dashboard, a 100 MiB object store (replicas pass no
large objects), usage stats off, and Ray's proxy errors in OpenAI's shape (`proxy.py`).
`"auto"` joins the cluster `ray start` runs on this machine; `HOST:PORT` a cluster's
head (GCS address); `ray://HOST:10001` goes through Ray Client.

SIGTERM or Ctrl-C: the application is deleted, which makes Ray stop routing to the
replicas and wait for their requests (up to `drain_timeout`), then closes them; a
local cluster is shut down. A second signal skips the wait (on a cluster the
application may then stay deployed: `serve delete cadenza` removes it).
"""
from __future__ import annotations

import os
import signal
import threading

from .args import APP_NAME, ServeArgs
from .proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV

LOCAL_OBJECT_STORE_BYTES = 100 * 2**20


def _connect(address: str | None) -> None:
    import ray

    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # the local cluster's processes inherit it
        ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


def _signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(sig, frame):
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: no drain
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def run(args: ServeArgs, *, address: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Deploy `args` as the application `cadenza` on route `/` and serve until a signal (see the module
    docstring). Prints one line with the URL and the cluster's address once every replica is ready."""
    import ray
    from ray import serve

    from .deployment import build_app

    _connect(address)
    stop = _signals()  # after ray.init, whose failure handler would otherwise take SIGTERM
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
        how = (f"{args.replicas} replica(s)" if args.max_replicas is None
               else f"{args.min_replicas or 1}..{args.max_replicas} replicas (autoscaling)")
        cluster = address or ray.get_runtime_context().gcs_address  # a local cluster: its head's address
        print(f"cadenza serve --ray: http://{host}:{port} ({how} of {', '.join(sorted(args.bundle))}; "
              f"Ray cluster {cluster})", flush=True)
        stop.wait()
        print("cadenza serve --ray: stopping (draining the replicas)", flush=True)
        serve.delete(APP_NAME)
    except KeyboardInterrupt:
        pass
    finally:
        if address is None:
            serve.shutdown()
        ray.shutdown()
    return 0


__all__ = ["run", "LOCAL_OBJECT_STORE_BYTES"]
