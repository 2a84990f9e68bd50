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
from iopsim.outputs.robustness import tornado_figure
from iopsim.outputs.drawing import Drawer
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
    "attendance": "attendance.parquet",
}


#: The record tables the run figures read (:mod:`iopsim.outputs.figures`), besides the scenario and
#: ``replications.csv``.
FIGURE_TABLES = ("levels", "sessions")


def run_figures(path: Path, drawer: Drawer | None) -> None:
    """Draw (or start drawing) every figure of the scenario folder ``path`` from its written files."""
    if drawer is not None:
        drawer.run(path)


def comparison_figures(path: Path, drawer: Drawer | None, names: list[str], kpi: str) -> None:
    """Draw (or start drawing) the comparison figures of the folder ``path`` from its written files."""
    if drawer is not None:
        drawer.comparison(path, names, kpi)


def write_scenario(folder: RunFolder, prefix: str, run: RunResult, drawer: Drawer | None = None) -> None:
    """Everything about one scenario: its resolved file, records, KPIs, transient and, with a
    ``drawer``, its figures (started as soon as the files they are drawn from are written)."""
    folder.write_text(f"{prefix}scenario.yaml", scenario_to_yaml(run.scenario))
    # What the figures are drawn from first (the scenario, levels, sessions and KPIs per replication), so that
    # the figure workers draw while the other tables are written.
    for name in FIGURE_TABLES:
        run.table(name).to_parquet(folder.file(prefix + TABLE_FILES[name]), index=False)
    folder.write_table(f"{prefix}replications", run.per_replication)
    run_figures(folder.path / prefix, drawer)
    for name in [n for n in TABLE_FILES if n not in FIGURE_TABLES]:
        run.table(name).to_parquet(folder.file(prefix + TABLE_FILES[name]), index=False)
    folder.write_table(f"{prefix}summary", run.summary)
    folder.write_table(f"{prefix}transient", run.transient())
    folder.write_table(f"{prefix}first_year", run.first_year())


def _finish(folder: RunFolder, plan: Plan, warmup: int, replications: int, report: bool, drawer: Drawer,
            **fields) -> Path:
    """Wait for the figures; write the manifest (last of the data files), the report; move the folder into place."""
    drawer.wait()
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
    """Write the run folder of ``run`` at ``dest`` (which must not exist or be empty); returns it.

    Without ``report`` no figures are drawn either (``iopsim report`` draws them later).
    With ``plan.jobs`` > 1 the figures are drawn in that many worker processes
    while the tables are written.
    """
    sc = run.scenario
    with RunFolder(dest) as folder, Drawer(run.plan.jobs if report else 1) as drawer:
        write_scenario(folder, "", run, drawer if report else None)
        return _finish(folder, run.plan, run.warmup, len(run.replications), report, drawer, kind="run", scenario=sc.name,
                       scenario_file=scenario_path, overrides=overrides or [], horizon_days=sc.horizon_days,
                       references=sc.references, warnings=[str(f) for f in run.findings])


def save_comparison(cmp: ComparisonResult, dest: Path, *, scenario_paths: dict[str, str] | None = None,
                    overrides: list[str] | None = None, report: bool = True) -> Path:
    """Write the comparison folder of ``cmp`` at ``dest``; returns it (figures as in `save_run`)."""
    with RunFolder(dest) as folder, Drawer(cmp.plan.jobs if report else 1) as drawer:
        draw = drawer if report else None
        folder.write_table("differences", cmp.differences)
        for name, run in cmp.runs.items():
            write_scenario(folder, f"scenarios/{name}/", run, draw)
        comparison_figures(folder.path, draw, cmp.names, cmp.plan.kpi)
        folder.write_table("parameters_differ", cmp.parameters)
        if cmp.selection is not None:
            folder.write_json("selection.json", cmp.selection)
        scenarios = {n: r.scenario for n, r in cmp.runs.items()}
        if cmp.robustness is not None and len(cmp.robustness):
            folder.write_table("robustness", cmp.robustness)
            if report:
                currency = next(iter(scenarios.values())).costs.currency
                tornado_figure(cmp.robustness, folder.file("figures/tornado.png"), currency)
        return _finish(folder, cmp.plan, cmp.warmup, len(next(iter(cmp.runs.values())).replications), report, drawer,
                       kind="compare", scenarios=cmp.names, scenario_files=scenario_paths or {},
                       overrides=overrides or [], horizon_days={n: s.horizon_days for n, s in scenarios.items()},
                       references={k: v for s in scenarios.values() for k, v in s.references.items()}, kpi=cmp.plan.kpi,
                       warnings={n: [str(f) for f in r.findings] for n, r in cmp.runs.items()})


def _files(folder: RunFolder) -> list[str]:
    return sorted(str(p.relative_to(folder.path)) for p in folder.path.rglob("*") if p.is_file())
