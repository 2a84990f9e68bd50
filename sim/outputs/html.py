"""What every HTML report shares: the template environment and figures embedded as data URLs."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    """The report templates (``iopsim/outputs/templates``), HTML-escaped.  One environment per
    process, so each template is compiled once (about a tenth of a second each), not per report."""
    return Environment(loader=PackageLoader("iopsim.outputs", "templates"), autoescape=select_autoescape(default=True))


def embedded_png(path: Path) -> str | None:
    """A PNG file as a ``data:`` URL, so the report stands alone; ``None`` if there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
