"""Incremental text: `engine.stream(pieces)` speaks text while it is still being written.

A voice agent feeds text as an LLM produces it. `Segmenter` (pure, no clock)
releases a segment as soon as the text holds a boundary of `split_text`'s
rules (`contract/text.py`): a sentence mark followed by whitespace, or a clause
mark followed by whitespace once the clause holds `min_clause_bytes`; a text
longer than one slot's limit is cut at its last space within the limit, as
`split_text` would. At the end of the text the rest is one last segment.
`TextFeed` runs one stream's segmenter on a thread: it reads the pieces (a
sync iterable on a thread of its own, an async iterable as a task on the
caller's event loop), releases what waited `wait_s` with at least
`wait_bytes` of text (the timer rule: the only one that depends on time), and
hands segments to the scheduler.

What equality is guaranteed: without a timer release, the segments are a
function of the text alone, however it is cut into pieces (tested); the same
segments with the same seed give the same codes and PCM as any other stream
with those segments. In particular, a text that is one segment for
`split_text` (a single clause or sentence within the limit) gives exactly the
audio of `engine.stream(text)`. A text with several boundaries is spoken as
several segments here, where `engine.stream(text)` packs it into as few as fit.

A stream whose next segment has not come when its current one ends leaves its
KV slot (`Scheduler._park`) and rejoins at the front of the queue when the text
comes; a wait past the end of its audio is not counted as an underrun. Rejoining
keeps the row's sampler (draw counter, repetition history) on `ort`; the torch
backends reset their on-device repetition history when a row rejoins, so there a
stream that waited for text and samples with repetition_penalty > 1 may differ.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass

from ..errors import EngineBusy, EngineClosed, TextError

_BOUNDARY = re.compile(r"([.!?;:])(?=\s)|([,\u2014\u2013-])(?=\s)")  # split_text's sentence / clause marks
_SPACE = re.compile(r"\s+")
_DONE = object()


@dataclass(frozen=True)
class FeedRules:
    """Where incremental text is cut into segments.

    min_clause_bytes: a clause mark (`,` `-` en / em dash) followed by whitespace releases its
        text once the segment holds this many UTF-8 bytes (sentence marks always release).
    wait_s: text that has waited this long without a boundary is released up to its last space
        (None: never; the segments then depend on the text alone).
    wait_bytes: ... if at least this many bytes wait.
    """

    min_clause_bytes: int = 12
    wait_s: float | None = 0.3
    wait_bytes: int = 24

    def __post_init__(self):
        if self.min_clause_bytes < 1 or self.wait_bytes < 1 or (self.wait_s is not None and self.wait_s <= 0):
            raise ValueError(f"feed rules need min_clause_bytes >= 1, wait_bytes >= 1, wait_s > 0 or None: {self}")


def _nbytes(raw: str) -> int:
    return len(" ".join(raw.split()).encode("utf-8"))


class Segmenter:
    """Text pieces in, segments out (whitespace-normalised like `check_text`). No clock, no threads.

    Example:
        >>> s = Segmenter(max_bytes=200)
        >>> s.push("Hello there. How"), s.push(" are you?"), s.finish()
        (['Hello there.'], [], ['How are you?'])
    """

    def __init__(self, max_bytes: int, rules: FeedRules | None = None):
        if max_bytes < 1:
            raise TextError("no text fits one KV slot beside the voice prefix; raise the engine's max_len")
        self.max_bytes, self.rules = max_bytes, rules or FeedRules()
        self.buffer = ""

    def push(self, piece: str) -> list[str]:
        """Add a piece; returns the segments it completes."""
        if not isinstance(piece, str):
            raise TextError(f"incremental text pieces must be str, got {type(piece).__name__}")
        self.buffer += piece
        return self._release()

    def timeout(self) -> list[str]:
        """The timer rule: release the waiting text up to its last space (all of it when it ends a
        sentence or with a space), if at least `wait_bytes` wait."""
        if _nbytes(self.buffer) < self.rules.wait_bytes:
            return []
        stripped = self.buffer.rstrip()
        if stripped != self.buffer or stripped[-1:] in ".!?;:":
            cut = len(self.buffer)
        else:
            spaces = [m.start() for m in _SPACE.finditer(self.buffer) if _nbytes(self.buffer[:m.start()])]
            if not spaces:
                return []
            cut = spaces[-1]
        return self._take(cut)

    def finish(self) -> list[str]:
        """The end of the text: what remains becomes the last segment(s)."""
        out = self._release()
        return out + self._take(len(self.buffer))

    # --- rules ------------------------------------------------------------------
    def _release(self) -> list[str]:
        out = []
        while (cut := self._cut()) is not None:
            out += self._take(cut)
        return out

    def _cut(self) -> int | None:
        """The end of the next segment in the buffer, or None while it may still grow."""
        for m in _BOUNDARY.finditer(self.buffer):
            n = _nbytes(self.buffer[:m.end()])
            if n > self.max_bytes:
                break
            if m.group(1) or n >= self.rules.min_clause_bytes:
                return m.end()
        if _nbytes(self.buffer) <= self.max_bytes:
            return None
        fits = [m.start() for m in _SPACE.finditer(self.buffer)
                if 0 < _nbytes(self.buffer[:m.start()]) <= self.max_bytes]
        if not fits:
            head = self.buffer.strip()[:40]
            raise TextError(f"a piece with no space to split at ({head!r}...) exceeds the {self.max_bytes}-byte "
                            "prompt limit; raise the engine's max_len or break the text")
        return fits[-1]

    def _take(self, cut: int) -> list[str]:
        raw, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return [" ".join(raw.split())] if raw.strip() else []


class TextFeed:
    """One stream's incremental text: reads the source, segments it, hands segments to the scheduler.

    The scheduler asks `state(i)`, `prompt(i)` and `bounds(i)`; the feed calls
    `scheduler.submit` with the first segment and `scheduler.resume` with each later one
    and at the end of the text (a no-op while the stream is still in its slot).
    """

    def __init__(self, source, segmenter: Segmenter, build, wait_s: float | None):
        self.source, self.segmenter, self.build, self.wait_s = source, segmenter, build, wait_s
        self.texts: list[str] = []  # the segments' text
        self._prompts: list[tuple] = []
        self._bounds: list[tuple[int, int]] = []
        self.done = False
        self._pieces: queue.Queue = queue.Queue()
        self._stopped = threading.Event()
        self._task = self._loop = None
        self._st = self._scheduler = None

    # --- the scheduler's side -----------------------------------------------------
    def state(self, i: int) -> str:
        return "ready" if i < len(self._prompts) else "end" if self.done else "wait"

    def prompt(self, i: int) -> tuple[int, ...]:
        return self._prompts[i]

    def bounds(self, i: int) -> tuple[int, int]:
        return self._bounds[i]

    def stop(self) -> None:
        """Stop reading the source (the stream ended, failed or was cancelled). Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._pieces.put(_DONE)
        task, loop = self._task, self._loop
        if task is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed meanwhile
                pass

    # --- reading ------------------------------------------------------------------
    def start(self, st, scheduler) -> None:
        """Read the source: an async iterable as a task on this thread's running loop, anything else
        on a thread; the segmenter runs on a thread of its own."""
        self._st, self._scheduler = st, scheduler
        if hasattr(self.source, "__aiter__"):
            import asyncio

            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise TypeError("an async iterable of text needs a running event loop in this thread: call "
                                "engine.stream / engine.astream from a coroutine, or pass a sync iterable") from None
            self._task = self._loop.create_task(self._read_async())
        else:
            threading.Thread(target=self._read_sync, name="cadenza-text-source", daemon=True).start()
        threading.Thread(target=self._run, name="cadenza-text-feed", daemon=True).start()

    def _read_sync(self) -> None:
        try:
            for piece in self.source:
                if self._stopped.is_set():
                    return
                self._pieces.put(piece)
            self._pieces.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - the caller's source failed: the stream fails with it
            self._pieces.put(e)

    async def _read_async(self) -> None:
        try:
            async for piece in self.source:
                if self._stopped.is_set():
                    return
                self._pieces.put(piece)
            self._pieces.put(_DONE)
        except Exception as e:  # noqa: BLE001 - cancellation (stop) is not one
            self._pieces.put(e)

    def _run(self) -> None:
        seg, since = self.segmenter, None
        while not self._stopped.is_set():
            timeout = None if since is None or self.wait_s is None else max(0.0, since + self.wait_s - time.monotonic())
            try:
                item = self._pieces.get(timeout=timeout)
            except queue.Empty:
                item = None
            try:
                if self._stopped.is_set():
                    return
                if item is _DONE:
                    return self._end(seg.finish())
                if isinstance(item, BaseException):
                    raise item
                texts = seg.timeout() if item is None else seg.push(item)
                self._emit(texts)
            except BaseException as e:  # noqa: BLE001 - handed to the stream's reader
                return self._fail(e)
            if texts or item is None:
                since = None
            if since is None and seg.buffer.strip():
                since = time.monotonic()

    def _emit(self, texts: list[str]) -> None:
        for text in texts:
            prompt, bounds = self.build(text)
            self.texts.append(text)
            self._bounds.append(bounds)
            self._prompts.append(prompt)  # last: state() sees a segment only once it is complete
            self._st.metrics.segments = len(self._prompts)
            if len(self._prompts) == 1:
                self._st.metrics.t_start = time.perf_counter()  # time-to-first-audio from the first segment
                try:
                    self._scheduler.submit(self._st)
                except (EngineBusy, EngineClosed) as e:
                    self._fail(e)
                    raise _Stopped from None
            else:
                self._scheduler.resume(self._st)

    def _end(self, texts: list[str]) -> None:
        self._emit(texts)
        self.done = True
        if not self._prompts:
            return self._fail(TextError("the text was empty or whitespace only; give at least one word to speak"))
        self._scheduler.resume(self._st)

    def _fail(self, error: BaseException) -> None:
        if isinstance(error, _Stopped) or self._stopped.is_set():
            return
        self.done = True
        st = self._st
        st.out.put(error)
        self.stop()
        if self._prompts:
            self._scheduler.cancel(st)
        else:  # never submitted: nothing holds a slot
            st.released.set()
            st.wake()


class _Stopped(Exception):
    """Internal: the feed already failed the stream."""


def open_fed_stream(engine, source, voice, params, rules: FeedRules | None = None):
    """`engine.stream(pieces)`: a `Stream` over incremental text (see the module docstring)."""
    from .request import Request
    from .stream import Stream

    rules = rules or FeedRules()
    builder = engine._builder
    prefix = builder.prefix(voice)
    segmenter = Segmenter(builder.text_limit(voice, prefix), rules)
    st = engine._new_state(Request((), (), voice.embedding, prefix, params), params)
    st.feed = TextFeed(source, segmenter, lambda text: builder.segment(text, voice, prefix), rules.wait_s)
    st.feed.start(st, engine.scheduler)
    return Stream(st, engine.scheduler, engine.sample_rate)


__all__ = ["FeedRules", "Segmenter", "TextFeed", "open_fed_stream"]
