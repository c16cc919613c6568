"""An engine `Stream` read from asyncio without blocking the event loop.

Each wait for a chunk runs on the server's thread pool. Closing never blocks:
`close()` marks the stream cancelled (the scheduler frees its KV slot before
its next step) and wakes the thread waiting for it.
"""
from __future__ import annotations

import asyncio

from ..errors import EngineClosed


class ChunkReader:
    """`await reader.next()` -> the next `Chunk`, or None at the end; raises the stream's error."""

    def __init__(self, stream, executor, live=None):
        self.stream, self.executor, self.live = stream, executor, live
        self._it = iter(stream)
        self._busy = False
        if live is not None:
            live.add(stream)

    async def next(self):
        if self._busy:
            raise RuntimeError("internal: a chunk read is already in flight")
        self._busy = True
        try:
            chunk = await asyncio.get_running_loop().run_in_executor(self.executor, next, self._it, None)
        finally:
            self._busy = False
        if chunk is None and self.live is not None and self.stream in self.live.cut:
            raise EngineClosed("the server shut down before this stream finished (drain deadline)")
        return chunk

    def close(self) -> None:
        """Cancel the stream if it still runs (non-blocking; its slot frees within one engine step)."""
        self.stream.close(timeout=0)
        if self.live is not None:
            self.live.discard(self.stream)


__all__ = ["ChunkReader"]
