"""MkDocs hooks: find the installed ``iopsim`` package, and fill in generated tables.

``docs/reference/scenario.md`` holds a marker line; :func:`on_page_markdown`
replaces it with :func:`iopsim.schema.reference.markdown_reference`, so the
published field tables always match what validation accepts.  Likewise the
marker in ``docs/reference/scenario-files.md`` becomes the table of input
limits, made from :data:`iopsim.schema.limits.DEFAULTS`.  A page that lost
its marker fails the build instead of silently publishing no table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = "<!-- scenario-reference -->"
PAGE = "reference/scenario.md"
LIMITS_MARKER = "<!-- input-limits -->"
LIMITS_PAGE = "reference/scenario-files.md"


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


def limits_table() -> str:
    """The input limits as a Markdown table: name, environment variable, default, what it bounds."""
    from iopsim.schema.limits import DEFAULTS

    def number(x: float) -> str:
        return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"

    rows = ["| limit | raised with | default | what it bounds |", "|---|---|---|---|"]
    for name, (default, what) in DEFAULTS.items():
        rows.append(f"| `{name}` | `IOPSIM_LIMIT_{name.upper()}` | {number(default)} | {what} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri == LIMITS_PAGE:
        if LIMITS_MARKER not in markdown:
            raise PluginError(f"{LIMITS_PAGE}: the line {LIMITS_MARKER} is missing; the table of input limits goes there")
        return markdown.replace(LIMITS_MARKER, limits_table())
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE}: the line {MARKER} is missing; the generated scenario reference goes there")
    from iopsim.schema.reference import markdown_reference

    return markdown.replace(MARKER, markdown_reference())
