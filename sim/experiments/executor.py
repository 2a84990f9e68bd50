"""Batches of replications, run on local processes or a Dask cluster, stored so they resume.

The sweep, the planner and calibration all need the same thing: run many
(scenario, seed, replications) tasks, keep only each replication's KPIs, and
never lose finished work.  This module is that one executor.

* :func:`run_task` is the pure unit of work: the same arguments give the same
  rows on any process or machine, because a replication's random streams depend
  only on (scenario, replication number, seed).  Common random numbers across
  scenarios follow: task A and task B with the same seed and replication
  numbers see the same patients wherever they differ in nothing else.
* :class:`Executor` owns a worker pool (or a Dask client) for its lifetime, so
  a sequential procedure that submits batch after batch pays start-up once.
  Results reach the caller's ``handle`` in the parent process, in completion
  order, one task at a time.  :meth:`Executor.ordered` runs any pure function
  the same way, for a caller that consumes results in order and may stop early
  (calibration's sampler, :mod:`iopsim.experiments.abc_sampler`).
* :func:`write_part` / :func:`read_part` store a task's rows atomically as one
  Parquet file: a process killed mid-write leaves a temp file, never a part
  that looks finished.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections import deque
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from iopsim.lazy import pandas as pd

from iopsim.errors import IopsimError
from iopsim.experiments.replications import Runner, run_replication
from iopsim.schema.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """Replications ``first .. first+count-1`` of ``scenario`` under ``seed``.

    ``key`` names the task for its caller (and its stored part); ``tags`` are
    columns written in front of every row (a point id, a candidate number).
    """

    key: str
    scenario: Scenario
    seed: int
    first: int
    count: int
    tags: dict = field(default_factory=dict)
    #: A calibration's posterior (:class:`iopsim.experiments.calibrate.PosteriorDraws`): each replication
    #: runs with its own draw of the free parameters, the same draw in every task (common random numbers).
    posterior: object | None = None


def run_task(scenario: Scenario, seed: int, first: int, count: int, tags: dict, posterior=None) -> dict:
    """Run one task's replications (pure).  ``{"rows": [...], "error": None}`` or the error text.

    A failing task does not raise: one bad point must not end a sweep of many.
    """
    try:
        rows = []
        for r in range(first, first + count):
            sc = scenario if posterior is None else posterior.scenario(scenario, r, seed)
            res = run_replication(sc, r, seed)
            rows.append({**tags, "replication": r, **res.kpis})
        return {"rows": rows, "error": None}
    except Exception as exc:
        return {"rows": [], "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


Handle = Callable[[Task, dict], None]

_SCHEDULER = re.compile(r"^(tcp)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def check_scheduler(address: str) -> None:
    """Refuse a malformed Dask scheduler address before anything runs.

    Only ``tcp://``: TLS needs certificates and UCX its own libraries, which
    iopsim does not configure (reach such a cluster through a tcp address).
    """
    m = _SCHEDULER.match(address.strip())
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise IopsimError(f"--scheduler {address!r}: expected a tcp address like tcp://127.0.0.1:8786 "
                          "(tls:// and ucx:// are not supported)")


class Executor(Runner):
    """Runs :class:`Task` batches serially, on ``jobs`` local processes, or on a Dask scheduler.

    Use as a context manager.  With ``jobs > 1`` the pool starts at once, so
    its fork server imports the simulator while the caller validates its input.
    """

    def __init__(self, jobs: int = 1, scheduler: str | None = None):
        if scheduler is not None:
            check_scheduler(scheduler)
        super().__init__(jobs)
        self.scheduler = scheduler
        self._client = None
        if scheduler is None and self.jobs > 1:
            self.pool().submit(int)

    def __enter__(self) -> "Executor":
        return self

    def close(self, abort: bool = False) -> None:
        super().close(abort)
        if self._client is not None:
            self._client.close()
            self._client = None

    def map(self, tasks: list[Task], handle: Handle) -> None:
        """Run ``tasks``; call ``handle(task, result)`` in this process as each one finishes."""
        if not tasks:
            return
        if self.scheduler is not None:
            self._map_dask(tasks, handle)
        elif self._pool is None or len(tasks) == 1:
            for t in tasks:
                handle(t, run_task(t.scenario, t.seed, t.first, t.count, t.tags, t.posterior))
        else:
            futures = {self.pool().submit(run_task, t.scenario, t.seed, t.first, t.count, t.tags, t.posterior): t
                       for t in tasks}
            for fut in as_completed(futures):
                handle(futures[fut], fut.result())

    def _dask(self):
        """The Dask client, connected on first use (one line if it cannot be)."""
        if self._client is None:
            try:
                from distributed import Client
            except ImportError:
                raise IopsimError("--scheduler needs Dask's 'distributed' package: pip install 'iopsim[cluster]'") from None
            try:
                self._client = Client(self.scheduler, timeout="10s")
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                raise IopsimError(f"--scheduler {self.scheduler}: cannot connect ({exc})") from None
        return self._client

    def _map_dask(self, tasks: list[Task], handle: Handle) -> None:
        client = self._dask()  # first: without distributed, the one line that says how to install it
        from distributed import as_completed as dask_completed

        futures = {}
        for t in tasks:
            fut = client.submit(run_task, t.scenario, t.seed, t.first, t.count, t.tags, t.posterior, pure=False)
            futures[fut] = t
        for fut in dask_completed(list(futures)):
            handle(futures[fut], fut.result())

    def ordered(self, fn: Callable, items: Iterable[tuple], shared: Any = None, ahead: int | None = None) -> Iterator:
        """``fn(shared, *item)`` for each item, yielded in the items' order, computed ahead on the workers.

        At most ``ahead`` calls (default: twice the workers) are submitted and
        not yet consumed, so ``items`` may be endless: a caller that has what
        it needs closes the generator (or leaves its loop), and calls still
        queued are cancelled.  Because results come in order, what the caller
        consumes does not depend on which worker finished first.  ``shared``
        (e.g. a large pickled function) is sent to a Dask cluster once.  With
        one job the calls run here, one at a time, as they are consumed.
        """
        items = iter(items)
        if self.scheduler is None and self.jobs <= 1:
            for item in items:
                yield fn(shared, *item)
            return
        if self.scheduler is not None:
            client = self._dask()
            shared_ref = client.scatter(shared, broadcast=True) if shared is not None else None

            def submit(item):
                return client.submit(fn, shared_ref, *item, pure=False)
            workers = max(1, sum(client.nthreads().values()))
        else:
            pool = self.pool()

            def submit(item):
                return pool.submit(fn, shared, *item)
            workers = self.jobs
        window = max(1, ahead if ahead is not None else 2 * workers)
        pending: deque = deque()
        try:
            for item in items:
                pending.append(submit(item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def write_part(path: Path, rows: list[dict] | pd.DataFrame) -> None:
    """Write one task's rows as ``path`` (Parquet), atomically: temp file in the same folder, then rename."""
    path = Path(path)
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_part(path: Path) -> pd.DataFrame:
    """One finished part; a damaged one (emptied or cut short outside iopsim) is a one-line error."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors and OSErrors
        raise IopsimError(f"{path}: this results part is damaged ({type(exc).__name__}); delete it and run the "
                          "same command again to redo it") from None


def read_parts(folder: Path, pattern: str) -> pd.DataFrame:
    """Every finished part in ``folder`` matching ``pattern`` (temp files never match), concatenated."""
    parts = sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []
    if not parts:
        return pd.DataFrame()
    return pd.concat([read_part(p) for p in parts], ignore_index=True)
