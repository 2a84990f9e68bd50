"""One `iopsim run`: replications -> tables -> run folder (records, KPIs, figures)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from sim.figures import run_figures
from sim.metrics import kpi_label
from sim.output import RunFolder, manifest
from sim.runner import ReplicationResult, kpi_table, run_replications
from sim.scenario import Scenario, scenario_to_yaml
from sim.stats import summarise

log = logging.getLogger(__name__)


#: Record tables of a run and the Parquet file each is written to.
TABLE_FILES = {
    "visits": "records.parquet",
    "episodes": "episodes.parquet",
    "levels": "levels.parquet",
    "sessions": "sessions.parquet",
    "bookings": "staff_bookings.parquet",
    "unmet": "unmet_demand.parquet",
    "services": "services.parquet",
}


@dataclass
class RunOutput:
    folder: Path
    per_replication: pd.DataFrame
    summary: pd.DataFrame


def stack_records(results: list[ReplicationResult], table: str) -> pd.DataFrame:
    frames = []
    for r in results:
        df = r.records[table]
        frames.append(df.assign(replication=r.replication)[["replication", *df.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def execute_run(
    scenario: Scenario,
    out_dir: Path,
    *,
    replications: int,
    seed: int,
    jobs: int = 1,
    scenario_path: str | None = None,
    overrides: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunOutput:
    """Run the replications and write the run folder atomically."""
    with RunFolder(out_dir) as folder:
        results = run_replications(scenario, replications, seed=seed, jobs=jobs, progress=progress)
        per_rep = kpi_table(results)
        summary = summarise(per_rep, kpi_label)
        folder.write_text("scenario.yaml", scenario_to_yaml(scenario))
        tables = {name: stack_records(results, name) for name in TABLE_FILES}
        for name, df in tables.items():
            df.to_parquet(folder.file(TABLE_FILES[name]), index=False)
        folder.write_table("replications", per_rep)
        folder.write_table("summary", summary)
        run_figures(tables, per_rep, folder.file("figures/.keep").parent, scenario.horizon_days, replications)
        folder.write_json(
            "manifest.json",
            manifest(
                kind="run",
                scenario=scenario.name,
                scenario_file=scenario_path,
                overrides=overrides or [],
                seed=seed,
                replications=replications,
                jobs=jobs,
                horizon_days=scenario.horizon_days,
                warmup_days=scenario.warmup_days,
                files=sorted(str(p.relative_to(folder.path)) for p in folder.path.rglob("*") if p.is_file()),
            ),
        )
        final = folder.commit()
    log.info("wrote %s", final)
    return RunOutput(final, per_rep, summary)
