"""Errors a user can act on: each renders as one line naming the file and field."""

from __future__ import annotations


class IopsimError(Exception):
    """Base for errors shown to the user as a single line (CLI exit code 2)."""


class ScenarioError(IopsimError):
    """A scenario file (or an override of it) is missing, malformed or invalid."""

    def __init__(self, source: str, field: str | None, message: str):
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")
