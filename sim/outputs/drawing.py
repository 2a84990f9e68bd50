"""Drawing the figures of a folder off the critical path.

Each figure is drawn by name from the files already written (see
:mod:`iopsim.outputs.figures`), so the figures of a run can be drawn in worker
processes while the main process goes on writing the tables, and the report
waits only for what is still being drawn.  With one job everything is drawn in
this process, in the same order, with the same bytes.  This module does not
import matplotlib: with workers, only they do.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

#: Run figures, slowest first, so the long ones start first in a pool.
RUN_ORDER = ("waitlist", "census", "session_calendar", "group_census", "funnel", "cost_breakdown", "money",
             "staff_utilisation")
COMPARISON_ORDER = ("forest", "waitlist_overlay", "census_overlay")


def _draw(task: tuple) -> str | None:
    kind, name, folder, extra = task
    from iopsim.outputs import figures

    if kind == "run":
        path = figures.draw_run_figure(name, Path(folder))
    else:
        path = figures.draw_comparison_figure(name, Path(folder), **extra)
    return str(path) if path is not None else None


def _ready() -> None:
    """Worker initializer: import the figure code (and matplotlib) as soon as the worker starts."""
    from iopsim.outputs import figures  # noqa: F401


def _nothing() -> None:
    return None


def _context():
    """How figure workers start: forked from this process when it runs no other thread, else as
    replication workers start (:func:`iopsim.experiments.workers.worker_context`).

    A forked worker starts with what this process has imported -- pandas and Arrow, which the
    figures read their tables with -- and imports only matplotlib; a fork server's worker imports
    all three first, about a second each, which cost as much as the second worker saved.  Forking
    is safe only without other threads (a lock held by one would stay held in the child), and a
    run's progress bar and replication pool are gone by the time its figures are drawn.
    """
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return mp.get_context("fork")
    from iopsim.experiments.workers import worker_context

    return worker_context()


class Drawer:
    """Draws figures of run and comparison folders, in ``jobs`` worker processes (or here, with one job).

    With more than one job the pool starts on entering the context.  Use as a context manager; `wait()`
    returns the figures drawn and raises the first error of any of them.
    """

    def __init__(self, jobs: int = 1):
        self.jobs = max(int(jobs), 1)
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Future] = []
        self._done: list[Path] = []

    def _start(self) -> None:
        """Start the workers at once: each imports matplotlib while this process writes the
        tables the figures are drawn from, instead of after the first figure is asked for."""
        self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=_context(), initializer=_ready)
        for _ in range(self.jobs):  # the pool starts a process per submission, up to max_workers
            self._pool.submit(_nothing)

    def __enter__(self) -> "Drawer":
        if self.jobs > 1:
            self._start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
            self._pool = None

    def _submit(self, task: tuple) -> None:
        if self.jobs == 1:
            path = _draw(task)
            if path:
                self._done.append(Path(path))
            return
        if self._pool is None:
            self._start()
        self._futures.append(self._pool.submit(_draw, task))

    def run(self, folder: Path) -> None:
        """Every figure of a scenario folder whose tables are written."""
        for name in RUN_ORDER:
            self._submit(("run", name, str(folder), {}))

    def comparison(self, folder: Path, names: list[str] | None = None, kpi: str | None = None) -> None:
        """The comparison figures of a folder whose differences and scenario folders are written
        (``names`` and ``kpi`` as its manifest will record them; read from the manifest if not given)."""
        for name in COMPARISON_ORDER:
            self._submit(("compare", name, str(folder), {"names": names, "kpi": kpi}))

    def wait(self) -> list[Path]:
        """Wait for every figure submitted; the paths drawn, in the order submitted."""
        for fut in self._futures:
            path = fut.result()
            if path:
                self._done.append(Path(path))
        self._futures = []
        return list(self._done)


def run_figure_files(folder: Path) -> list[str]:
    """The figure files a scenario folder should have (those its records allow)."""
    import pandas as pd

    folder = Path(folder)
    names = ["waitlist.png", "census.png", "funnel.png", "cost_breakdown.png"]
    sessions = folder / "sessions.parquet"
    if sessions.exists() and len(pd.read_parquet(sessions, columns=["track"])):
        names += ["group_census.png", "session_calendar.png"]
    reps = folder / "replications.csv"
    columns = list(pd.read_csv(reps, nrows=0)) if reps.exists() else []
    if any(c.startswith("staff_") and c.endswith("_utilisation") for c in columns):
        names.append("staff_utilisation.png")
    if "revenue_total" in columns:
        names.append("money.png")
    return names


def missing_run_figures(folder: Path) -> bool:
    """True if a scenario folder lacks a figure its records allow (a ``--no-report`` run)."""
    return any(not (Path(folder) / "figures" / f).exists() for f in run_figure_files(folder))


def missing_comparison_figures(folder: Path) -> bool:
    return any(not (Path(folder) / "figures" / f"{n}.png").exists() for n in COMPARISON_ORDER)
