"""Run folders: the files of a run or a comparison, written atomically.

A run folder holds the resolved scenario, every record table (Parquet), the
KPIs per replication and their summary (CSV and JSON), the opening transient,
figures, ``manifest.json`` (provenance, written last) and ``report.html``.  A
comparison folder holds one such folder per scenario under ``scenarios/``, plus
the paired differences, the settings that differ and, on request, the
selection.  The whole folder is staged and renamed into place only when
complete (:class:`iopsim.files.RunFolder`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from iopsim.experiments.run import ComparisonResult, Plan, RunResult
from iopsim.files import RunFolder, manifest
from iopsim.outputs.figures import comparison_figures, run_figures
from iopsim.schema.scenario import scenario_to_yaml

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


def write_scenario(folder: RunFolder, prefix: str, run: RunResult) -> None:
    """Everything about one scenario: its resolved file, records, KPIs, transient, figures."""
    folder.write_text(f"{prefix}scenario.yaml", scenario_to_yaml(run.scenario))
    tables = {name: run.table(name) for name in TABLE_FILES}
    for name, df in tables.items():
        df.to_parquet(folder.file(prefix + TABLE_FILES[name]), index=False)
    folder.write_table(f"{prefix}replications", run.per_replication)
    folder.write_table(f"{prefix}summary", run.summary)
    folder.write_table(f"{prefix}transient", run.transient())
    folder.write_table(f"{prefix}first_year", run.first_year())
    run_figures(tables, run.per_replication, folder.file(f"{prefix}figures/.keep").parent,
                run.scenario.horizon_days, len(run.replications))


def _finish(folder: RunFolder, plan: Plan, warmup: int, replications: int, report: bool, **fields) -> Path:
    """Write the manifest (last of the data files), the report, and move the folder into place."""
    folder.write_json("manifest.json", manifest(
        **fields,
        seed=plan.seed,
        replications=replications,
        jobs=plan.jobs,
        warmup_days=warmup,
        warmup_requested=plan.warmup,
        precision=plan.precision,
        precision_kpi=plan.kpi if plan.precision else None,
        threshold=plan.threshold,
        notes=plan.notes,
        files=_files(folder),
    ))
    if report:
        from iopsim.outputs.report import write_report

        write_report(folder.path)
    final = folder.commit()
    log.info("wrote %s", final)
    return final


def save_run(run: RunResult, dest: Path, *, scenario_path: str | None = None, overrides: list[str] | None = None,
             report: bool = True) -> Path:
    """Write the run folder of ``run`` at ``dest`` (which must not exist or be empty); returns it."""
    sc = run.scenario
    with RunFolder(dest) as folder:
        write_scenario(folder, "", run)
        return _finish(folder, run.plan, run.warmup, len(run.replications), report, kind="run", scenario=sc.name,
                       scenario_file=scenario_path, overrides=overrides or [], horizon_days=sc.horizon_days,
                       references=sc.references, warnings=[str(f) for f in run.findings])


def save_comparison(cmp: ComparisonResult, dest: Path, *, scenario_paths: dict[str, str] | None = None,
                    overrides: list[str] | None = None, report: bool = True) -> Path:
    """Write the comparison folder of ``cmp`` at ``dest``; returns it."""
    with RunFolder(dest) as folder:
        for name, run in cmp.runs.items():
            write_scenario(folder, f"scenarios/{name}/", run)
        folder.write_table("differences", cmp.differences)
        folder.write_table("parameters_differ", cmp.parameters)
        if cmp.selection is not None:
            folder.write_json("selection.json", cmp.selection)
        comparison_figures(folder, cmp.names, cmp.differences, cmp.plan.kpi)
        scenarios = {n: r.scenario for n, r in cmp.runs.items()}
        return _finish(folder, cmp.plan, cmp.warmup, len(next(iter(cmp.runs.values())).replications), report,
                       kind="compare", scenarios=cmp.names, scenario_files=scenario_paths or {},
                       overrides=overrides or [], horizon_days={n: s.horizon_days for n, s in scenarios.items()},
                       references={k: v for s in scenarios.values() for k, v in s.references.items()}, kpi=cmp.plan.kpi,
                       warnings={n: [str(f) for f in r.findings] for n, r in cmp.runs.items()})


def _files(folder: RunFolder) -> list[str]:
    return sorted(str(p.relative_to(folder.path)) for p in folder.path.rglob("*") if p.is_file())
