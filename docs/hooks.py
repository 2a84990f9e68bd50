"""MkDocs hooks: find the installed ``iopsim`` package, and fill in the scenario reference.

``docs/reference/scenario.md`` holds a marker line; :func:`on_page_markdown`
replaces it with :func:`iopsim.schema.reference.markdown_reference`, so the
published field tables always match what validation accepts.  A page that
lost its marker fails the build instead of silently publishing no reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = "<!-- scenario-reference -->"
PAGE = "reference/scenario.md"


def on_startup(command: str, dirty: bool, **kwargs) -> None:
    """Keep the ``iopsim`` console script from hiding the ``iopsim`` package from mkdocstrings.

    ``mkdocs`` is itself a console script, so Python puts its folder (the
    environment's ``bin/``) first on ``sys.path``.  That folder also holds the
    ``iopsim`` script, a file named exactly like the package, and mkdocstrings
    (griffe) would take it for the package installed by ``pip install -e .``.
    No module is ever imported from a folder of console scripts, so such
    folders are dropped from the search path, at start-up, before
    mkdocstrings records the search path in its ``on_config``.
    """
    sys.path[:] = [p for p in sys.path if not Path(p or ".", "iopsim").is_file()]


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE}: the line {MARKER} is missing; the generated scenario reference goes there")
    from iopsim.schema.reference import markdown_reference

    return markdown.replace(MARKER, markdown_reference())
