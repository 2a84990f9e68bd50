"""How worker processes start: a fork server that has imported the simulator, or fork.

This module imports nothing heavy, so the command line can start the fork
server first and import the rest of iopsim while the server imports the
simulator on the other core (:func:`start_worker_server`).
"""

from __future__ import annotations

import ast
import logging
import multiprocessing as mp
import os
import sys
from pathlib import Path

from iopsim.errors import IopsimError

log = logging.getLogger(__name__)


def _watch_parent() -> None:
    """Worker initializer: exit when the process that started the pool dies.

    A fork server's workers are not children of the main process, so a
    SIGKILL of the main process would leave them running; each worker watches
    the main process's sentinel and ends itself when it closes.
    """
    import threading
    from multiprocessing.connection import wait

    parent = mp.parent_process()
    if parent is None:  # pragma: no cover - not in a pool worker
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="iopsim-parent-watch", daemon=True).start()


def worker_context():
    """The process start method for worker pools.

    Normally a fork server that has imported the simulator once, so each worker
    starts without re-importing it.  A fork server (like spawn)
    re-imports the main script in every worker: a script that calls
    ``iopsim.run(..., jobs=2)`` without an ``if __name__ == "__main__":`` guard
    would run itself again in each worker and the pool would break.  When the
    call comes from such unguarded top-level code, or when ``iopsim`` was
    loaded from a checkout without being installed, workers are forked
    instead: they inherit the parent's memory and import nothing.  Where fork
    is not available the caller gets one sentence saying what to do.
    """
    if _needs_fork():
        if "fork" not in mp.get_all_start_methods():
            raise IopsimError(
                "jobs > 1 from a script needs its top-level code under `if __name__ == \"__main__\":` "
                "on this platform; add the guard or use jobs=1")
        log.debug("worker processes are forked (unguarded main script or uninstalled package)")
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver")
    # scipy.special too: the distributions' quantiles import it on first use, which cost each
    # worker about 0.2 s in its first replication (0.28 s instead of 0.09 for the baseline).
    ctx.set_forkserver_preload(["iopsim.experiments.replications", "scipy.special"])
    return ctx


def start_worker_server() -> None:
    """Start the fork server now, if worker processes will come from one.

    The server imports the simulator (numpy, SimPy, the pydantic schema and
    ``scipy.special``, about half a second; not pandas, which the records and
    KPIs do without) before it can fork the first worker.  Started early, those
    imports run while this process goes on loading and checking the scenario,
    instead of after.
    """
    ctx = worker_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _needs_fork() -> bool:
    """True if a fork server's workers could not start cleanly from here (see :func:`worker_context`)."""
    return not _workers_import_this_package() or _called_from_unguarded_main()


def _workers_import_this_package() -> bool:
    """True if a fresh process would import this very ``iopsim`` (the import system minus ``sys.modules``)."""
    here = Path(__file__).resolve().parents[1] / "__init__.py"
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        try:
            spec = find("iopsim", None) if find else None
        except (ImportError, ValueError, AttributeError):
            continue
        if spec is not None:
            return spec.origin is not None and Path(spec.origin).resolve() == here
    return False


def _called_from_unguarded_main() -> bool:
    """True if the current call stack starts in top-level code of a ``__main__`` script outside a guard."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return False  # interactive, a notebook or `python -c`: a worker re-runs nothing
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return False  # a package's __main__ (`python -m pkg`): multiprocessing never re-runs it in a worker
    # A script, or a module run with `python -m mod`: a fork server's (or spawn's) workers import it
    # again, by path or by name, so its top-level code outside a guard would run again in each.
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__"):
        frame = frame.f_back
    if frame is None:
        return False
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return True  # cannot tell: forking is the safe choice
    line = frame.f_lineno
    return not any(_is_main_guard(node) and node.lineno <= line <= (node.end_lineno or node.lineno)
                   for node in ast.walk(tree))


def _is_main_guard(node) -> bool:
    """``if __name__ == "__main__":`` (either operand order)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return False
    if not isinstance(node.test.ops[0], ast.Eq):
        return False
    sides = [node.test.left, *node.test.comparators]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    consts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and consts == ["__main__"]


