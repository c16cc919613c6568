"""What the commands share: the user-facing error and its exit code."""
from __future__ import annotations

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def one_line(e: BaseException) -> str:
    """The message of `e` on one line, printable characters only (no terminal escapes), at most 500."""
    text = " ".join(str(e).split()) or type(e).__name__
    return "".join(c if c.isprintable() else "?" for c in text)[:500]
