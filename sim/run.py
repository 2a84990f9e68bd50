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
        stack_records(results, "visits").to_parquet(folder.file("records.parquet"), index=False)
        stack_records(results, "episodes").to_parquet(folder.file("episodes.parquet"), index=False)
        levels = stack_records(results, "levels")
        levels.to_parquet(folder.file("levels.parquet"), index=False)
        folder.write_table("replications", per_rep)
        folder.write_table("summary", summary)
        run_figures(levels, per_rep, folder.file("figures/.keep").parent)
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
