"""Replications: pure, picklable functions run serially or in worker processes.

A replication's result depends only on (scenario, replication number, seed):
the random streams are derived from those three, never from a process or the
order in which work was scheduled, so a parallel run equals a serial one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

from iopsim.analysis.kpis import replication_kpis
from iopsim.engine.model import Model
from iopsim.engine.records import Records
from iopsim.lazy import pandas as pd
from iopsim.experiments.workers import _watch_parent, worker_context
from iopsim.schema.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass
class ReplicationResult:
    replication: int
    #: The record tables (``records["visits"]`` is a DataFrame, built when first asked for).
    records: Records
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


def _worker(args) -> ReplicationResult:
    scenario, replication, seed = args
    return run_replication(scenario, replication, seed)


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

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)

    def close(self, abort: bool = False) -> None:
        """Shut the pool down.  ``abort`` (an error, Ctrl-C or SIGTERM): do not wait for the replications
        in progress, stop the workers now, so that the process exits within a batch system's grace period."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if not abort:
            pool.shutdown(cancel_futures=True)
            return
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in workers:
            if p.is_alive():
                p.terminate()
        for p in workers:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()

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


def kpi_table(results: list[ReplicationResult]):
    """Per-replication KPIs, one row per replication (a DataFrame)."""
    rows = [{"replication": r.replication, **r.kpis} for r in results]
    return pd.DataFrame(rows)
