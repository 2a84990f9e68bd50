"""Replications: pure, picklable functions run serially or in worker processes.

A replication's result depends only on (scenario, replication number, seed):
the random streams are derived from those three, never from a process or the
order in which work was scheduled, so a parallel run equals a serial one.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from iopsim.analysis.kpis import replication_kpis
from iopsim.errors import IopsimError
from iopsim.engine.model import Model
from iopsim.schema.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass
class ReplicationResult:
    replication: int
    records: dict[str, pd.DataFrame]
    kpis: dict[str, float]


def run_replication(scenario: Scenario, replication: int, seed: int | None = None) -> ReplicationResult:
    """Simulate one replication and compute its KPIs."""
    records = Model(scenario, replication, seed).run()
    return ReplicationResult(replication, records, replication_kpis(records, scenario))


def kpi_names(scenario: Scenario) -> set[str]:
    """The KPI names a scenario produces (from a two-day run: cheap, and the same set)."""
    short = scenario.model_copy(update={"horizon_days": 2, "warmup_days": 0})
    return set(run_replication(short, 0).kpis)


def unknown_kpi(kpi: str, known: set[str]) -> str:
    """The message for a KPI name that is not in ``known``, with similar names as examples."""
    close = sorted(k for k in known if k.split("_")[0] == kpi.split("_")[0])[:8]
    return f"unknown KPI {kpi!r}; e.g. {', '.join(close or sorted(known)[:8])}"


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


def _worker(args) -> ReplicationResult:
    scenario, replication, seed = args
    return run_replication(scenario, replication, seed)


def worker_context():
    """The process start method for worker pools.

    Normally a fork server that has imported the simulator once, so each worker
    starts without re-importing pandas and scipy.  A fork server (like spawn)
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
    ctx.set_forkserver_preload(["iopsim.experiments.replications"])
    return ctx


def start_worker_server() -> None:
    """Start the fork server now, if worker processes will come from one.

    The server imports the simulator (pandas, scipy, pydantic: most of a second)
    before it can fork the first worker.  Started early, those imports run while
    this process goes on loading and checking the scenario, instead of after.
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
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        return False  # interactive, a notebook, `python -c`, or `python -m` (imported by name)
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


class Runner:
    """Runs (scenario, replication, seed) tasks serially or on a process pool.

    The pool is created on first use and reused, so sequential procedures
    (adding replications until a precision is reached) pay its start-up once.
    Results come back in task order whatever order workers finish in.
    """

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, int(jobs))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def pool(self) -> ProcessPoolExecutor:
        """The worker pool, started on first use (see :func:`worker_context` for how workers start)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=worker_context(),
                                             initializer=_watch_parent)
        return self._pool

    def run(self, tasks: list[tuple[Scenario, int, int]], progress: Callable[[int], None] | None = None):
        results: list[ReplicationResult | None] = [None] * len(tasks)
        if self.jobs <= 1 or len(tasks) <= 1:
            for i, item in enumerate(tasks):
                results[i] = _worker(item)
                if progress:
                    progress(1)
            return results
        futures = {self.pool().submit(_worker, item): i for i, item in enumerate(tasks)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            if progress:
                progress(1)
        return results


def run_replications(
    scenario: Scenario,
    replications: int,
    seed: int | None = None,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    first: int = 0,
) -> list[ReplicationResult]:
    """Run replications ``first .. first+replications-1``; results in replication order."""
    seed = scenario.seed if seed is None else seed
    tasks = [(scenario, r, seed) for r in range(first, first + replications)]
    with Runner(min(jobs, replications)) as runner:
        results = runner.run(tasks, progress)
    log.info("ran %d replications of %s", replications, scenario.name)
    return results


def kpi_table(results: list[ReplicationResult]) -> pd.DataFrame:
    """Per-replication KPIs, one row per replication."""
    rows = [{"replication": r.replication, **r.kpis} for r in results]
    return pd.DataFrame(rows)
