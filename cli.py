"""The iopsim command line, runnable from a checkout: ``python cli.py run scenarios/baseline.yaml``.

The commands live in :mod:`iopsim.cli`; this file only finds the package,
installed or not (the library's folder is ``sim/``, its import name ``iopsim``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load_iopsim() -> None:
    """Import ``iopsim``, mapping this checkout's ``sim/`` folder to it when it is not installed."""
    if importlib.util.find_spec("iopsim") is not None:
        return
    root = Path(__file__).resolve().parent / "sim"
    spec = importlib.util.spec_from_file_location("iopsim", root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["iopsim"] = module
    spec.loader.exec_module(module)


_load_iopsim()

from iopsim.cli import app, entry  # noqa: E402,F401

if __name__ == "__main__":
    entry()
