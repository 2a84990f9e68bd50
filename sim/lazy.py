"""Heavy modules imported on first use.

``from iopsim.lazy import pandas as pd`` gives a stand-in for pandas that
imports it the first time one of its names is used.  The commands that never
build a table (``iopsim validate``, ``--help``, every one-line error) and the
replication workers (whose records and KPIs are numpy arrays) then start
without pandas, which is most of a second of an import; the code that builds a
table pays for it when it does.  Nothing else changes: ``sys.modules`` holds
the real module once it is loaded, and the stand-in hands out its attributes.
"""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """A module that is imported when one of its attributes is first looked up."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__dict__["_lazy_target"])
        # Copy the real module's names here, so that later lookups are plain attribute reads.
        self.__dict__.update({k: v for k, v in vars(module).items() if k != "__name__"})
        return getattr(module, attr)

    def __dir__(self):
        return dir(importlib.import_module(self.__dict__["_lazy_target"]))


pandas = LazyModule("pandas")
