"""What the commands share: the user-facing error and its exit code."""
from __future__ import annotations

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""
