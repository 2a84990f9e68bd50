"""Replications: pure, picklable functions run serially or in worker processes.

A replication's result depends only on (scenario, replication number, seed):
the random streams are derived from those three, never from a process or the
order in which work was scheduled, so a parallel run equals a serial one.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from sim.metrics import replication_kpis
from sim.model import Model
from sim.scenario import Scenario

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


def _worker(args) -> ReplicationResult:
    scenario, replication, seed = args
    return run_replication(scenario, replication, seed)


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
    work = [(scenario, r, seed) for r in range(first, first + replications)]
    results: dict[int, ReplicationResult] = {}
    if jobs <= 1 or replications <= 1:
        for item in work:
            res = _worker(item)
            results[res.replication] = res
            if progress:
                progress(1)
    else:
        ctx = mp.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=min(jobs, replications), mp_context=ctx) as pool:
            futures = [pool.submit(_worker, item) for item in work]
            for fut in as_completed(futures):
                res = fut.result()
                results[res.replication] = res
                if progress:
                    progress(1)
    log.info("ran %d replications of %s", replications, scenario.name)
    return [results[r] for r in sorted(results)]


def kpi_table(results: list[ReplicationResult]) -> pd.DataFrame:
    """Per-replication KPIs, one row per replication."""
    rows = [{"replication": r.replication, **r.kpis} for r in results]
    return pd.DataFrame(rows)
