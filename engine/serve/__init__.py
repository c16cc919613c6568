"""`cadenza serve`: the OpenAI-compatible streaming speech server (the `[server]` extra).

    >>> from cadenza.engine.serve import create_app
    >>> app = create_app(bundles={"tiny": "bundles/tiny"}, api_key="secret")  # any ASGI server runs it

The engine core never imports this package (it needs starlette, uvicorn, prometheus-client).
"""
from __future__ import annotations


def create_app(*args, **kwargs):
    """See `cadenza.engine.serve.app.create_app`."""
    from .app import create_app as make

    return make(*args, **kwargs)


def __getattr__(name: str):
    if name in ("ServeConfig",):
        from .state import ServeConfig

        return ServeConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["create_app", "ServeConfig"]
