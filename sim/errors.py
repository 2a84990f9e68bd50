"""Errors a user can act on: each renders as one line naming the file and field."""

from __future__ import annotations


class IopsimError(Exception):
    """Base for errors shown to the user as a single line (CLI exit code 2)."""


def bounded(text: str, most: int = 600) -> str:
    """``text``, or its two ends around " ... " when it is longer than ``most`` characters.

    What a message quotes or names can come from a file (a value, a key)
    thousands of characters long; a one-line error stays short enough to read.
    """
    if len(text) <= most:
        return text
    head = most // 2
    return text[:head] + " ... " + text[len(text) - (most - head - 5):]


class ScenarioError(IopsimError):
    """A scenario file (or an override of it) is missing, malformed or invalid.

    The field and the message are cut to their two ends when very long (see :func:`bounded`).
    """

    def __init__(self, source: str, field: str | None, message: str):
        self.source = source
        self.field = bounded(field, 300) if field else field
        self.message = bounded(str(message))
        where = f"{source}: {self.field}" if self.field else source
        super().__init__(f"{where}: {self.message}")
