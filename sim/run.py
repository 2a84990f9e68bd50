"""`iopsim run` and `iopsim compare`: replications -> tables -> a run folder.

Both write atomically through :class:`sim.output.RunFolder`.  A compare folder
holds one sub-folder per scenario, laid out exactly like a run folder, plus the
paired differences, the parameters that differ and (on request) the selection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from sim.compare import differing_parameters, nelson_matejcik, paired_differences, replications_for_precision
from sim.errors import IopsimError
from sim.figures import comparison_figures, run_figures
from sim.metrics import kpi_label, replication_kpis
from sim.output import RunFolder, manifest
from sim.runner import ReplicationResult, Runner, kpi_names, kpi_table, unknown_kpi
from sim.scenario import Scenario, scenario_to_yaml
from sim.stats import summarise
from sim.warmup import monthly_trajectory, transient_table, warmup_days

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
class Plan:
    """How many replications, with which seed, warm-up and stopping rule."""

    replications: int
    seed: int
    jobs: int = 1
    warmup: int | str | None = None  # None: the scenario's; "auto": MSER-5; or days
    precision: float | None = None  # relative CI half-width on `kpi` to reach
    kpi: str = "cost_per_completed_program"
    max_replications: int = 200
    threshold: float = 10.0  # waitlist length whose first crossing is reported
    select: dict | None = None  # {"goal": "min"|"max", "indifference": d, "alpha": a}
    notes: dict = field(default_factory=dict)


@dataclass
class RunOutput:
    folder: Path
    per_replication: pd.DataFrame
    summary: pd.DataFrame
    extra: dict = field(default_factory=dict)


def stack_records(results: list[ReplicationResult], table: str) -> pd.DataFrame:
    frames = []
    for r in results:
        df = r.records[table]
        frames.append(df.assign(replication=r.replication)[["replication", *df.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------- simulate


def simulate(
    scenarios: dict[str, Scenario], plan: Plan, progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> dict[str, list[ReplicationResult]]:
    """Run every scenario for the same replication numbers and seed (CRN).

    With ``plan.precision`` replications are added in batches until every
    scenario's mean of ``plan.kpi`` has a relative 95 % CI half-width at or
    below the target, or ``plan.max_replications`` is reached.  With
    ``plan.select`` the Nelson-Matejcik second stage adds what it needs.
    """
    results: dict[str, list[ReplicationResult]] = {n: [] for n in scenarios}

    def run_more(count: int) -> None:
        start = len(next(iter(results.values())))
        tasks = [(sc, r, plan.seed) for sc in scenarios.values() for r in range(start, start + count)]
        if total:
            total(len(tasks))
        out = runner.run(tasks, progress)
        for i, name in enumerate(scenarios):
            results[name].extend(out[i * count : (i + 1) * count])

    with Runner(plan.jobs) as runner:
        run_more(plan.replications)
        if plan.precision is not None:
            batch = max(plan.jobs, 2)
            while len(results[next(iter(results))]) < plan.max_replications:
                values = {n: np.array([r.kpis.get(plan.kpi, np.nan) for r in rs]) for n, rs in results.items()}
                if replications_for_precision(values, plan.precision):
                    break
                run_more(min(batch, plan.max_replications - len(results[next(iter(results))])))
            plan.notes["replications_used"] = len(results[next(iter(results))])
            values = {n: np.array([r.kpis.get(plan.kpi, np.nan) for r in rs]) for n, rs in results.items()}
            plan.notes["precision_reached"] = bool(replications_for_precision(values, plan.precision))
        if plan.select is not None and len(scenarios) > 1:
            from sim.compare import nm_required_replications

            n0 = len(results[next(iter(results))])
            values = {n: np.array([r.kpis[plan.kpi] for r in rs]) for n, rs in results.items()}
            need = nm_required_replications(values, plan.select["indifference"], plan.select["alpha"])
            if need > plan.max_replications:
                raise IopsimError(
                    f"--select needs {need} replications (more than --max-replications {plan.max_replications}); "
                    "raise --indifference or --max-replications"
                )
            if need > n0:
                run_more(need - n0)
            plan.notes["select_first_stage"] = n0
    return results


def resolve_warmup(plan: Plan, scenarios: dict[str, Scenario], results: dict[str, list[ReplicationResult]]) -> int:
    """The warm-up (days) used for every scenario of the run (one value, so paired KPIs share a window)."""
    if plan.warmup == "auto":
        days = max(warmup_days(stack_records(rs, "levels")) for rs in results.values())
        horizon = min(sc.horizon_days for sc in scenarios.values())
        w = min(days, horizon // 2)
        plan.notes["warmup_method"] = "MSER-5 on the mean daily waitlist and census series of every stage"
        return int(w)
    if plan.warmup is None:
        return max(sc.warmup_days for sc in scenarios.values())
    return int(plan.warmup)


def fixed_warmup(scenario: Scenario, plan: Plan) -> Scenario:
    """The scenario with ``--warmup DAYS`` applied, so that workers (and the
    precision rule) judge KPIs over the same window as the final results."""
    if isinstance(plan.warmup, int):
        if plan.warmup >= scenario.horizon_days:
            raise IopsimError(f"--warmup: {plan.warmup} days is not shorter than the {scenario.horizon_days}-day horizon")
        return scenario.model_copy(update={"warmup_days": plan.warmup})
    return scenario


def check_kpi(scenario: Scenario, plan: Plan) -> None:
    """Refuse an unknown --kpi before anything runs (it drives --precision and --select)."""
    if plan.precision is None and plan.select is None:
        return
    known = kpi_names(scenario)
    if plan.kpi not in known:
        raise IopsimError(f"--kpi: {unknown_kpi(plan.kpi, known)}")


def kpis_for(results: list[ReplicationResult], scenario: Scenario, warmup: int) -> pd.DataFrame:
    if warmup == scenario.warmup_days:
        return kpi_table(results)
    if warmup >= scenario.horizon_days:
        raise IopsimError(f"warm-up of {warmup} days is not shorter than the {scenario.horizon_days}-day horizon")
    rows = [{"replication": r.replication, **replication_kpis(r.records, scenario, warmup)} for r in results]
    return pd.DataFrame(rows)


def write_scenario(folder: RunFolder, prefix: str, scenario: Scenario, results: list[ReplicationResult],
                   per_rep: pd.DataFrame, plan: Plan, warmup: int) -> pd.DataFrame:
    """Everything about one scenario: its resolved file, records, KPIs, transient, figures."""
    summary = summarise(per_rep, kpi_label)
    # The resolved scenario records the warm-up actually used (--warmup included).
    folder.write_text(f"{prefix}scenario.yaml", scenario_to_yaml(scenario.model_copy(update={"warmup_days": warmup})))
    tables = {name: stack_records(results, name) for name in TABLE_FILES}
    for name, df in tables.items():
        df.to_parquet(folder.file(prefix + TABLE_FILES[name]), index=False)
    folder.write_table(f"{prefix}replications", per_rep)
    folder.write_table(f"{prefix}summary", summary)
    folder.write_table(f"{prefix}transient", transient_table(tables["levels"], plan.threshold))
    folder.write_table(f"{prefix}first_year", monthly_trajectory(tables["levels"]))
    run_figures(tables, per_rep, folder.file(f"{prefix}figures/.keep").parent, scenario.horizon_days, len(results))
    return summary


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
        from sim.report import write_report

        write_report(folder.path)
    final = folder.commit()
    log.info("wrote %s", final)
    return final


def execute_run(
    scenario: Scenario,
    out_dir: Path,
    plan: Plan,
    *,
    scenario_path: str | None = None,
    overrides: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
    report: bool = True,
) -> RunOutput:
    """Run the replications and write the run folder atomically."""
    scenario = fixed_warmup(scenario, plan)
    check_kpi(scenario, plan)
    with RunFolder(out_dir) as folder:
        results = simulate({scenario.name: scenario}, plan, progress, total)[scenario.name]
        warmup = resolve_warmup(plan, {scenario.name: scenario}, {scenario.name: results})
        per_rep = kpis_for(results, scenario, warmup)
        summary = write_scenario(folder, "", scenario, results, per_rep, plan, warmup)
        final = _finish(folder, plan, warmup, len(results), report, kind="run", scenario=scenario.name,
                        scenario_file=scenario_path, overrides=overrides or [], horizon_days=scenario.horizon_days,
                        references=scenario.references)
    return RunOutput(final, per_rep, summary, {"warmup": warmup, "precision_reached": plan.notes.get("precision_reached", True)})


def execute_compare(
    scenarios: dict[str, Scenario],
    out_dir: Path,
    plan: Plan,
    *,
    scenario_paths: dict[str, str] | None = None,
    overrides: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
    report: bool = True,
) -> RunOutput:
    """Run scenarios with common random numbers; write per-scenario folders and the comparison."""
    scenarios = {n: fixed_warmup(sc, plan) for n, sc in scenarios.items()}
    check_kpi(next(iter(scenarios.values())), plan)
    with RunFolder(out_dir) as folder:
        results = simulate(scenarios, plan, progress, total)
        warmup = resolve_warmup(plan, scenarios, results)
        per_rep = {n: kpis_for(results[n], sc, warmup) for n, sc in scenarios.items()}
        summaries = {}
        for name, sc in scenarios.items():
            summaries[name] = write_scenario(folder, f"scenarios/{name}/", sc, results[name], per_rep[name], plan, warmup)
        diffs = paired_differences(per_rep)
        diffs.insert(1, "label", [kpi_label(k)[0] for k in diffs["kpi"]])
        diffs.insert(2, "unit", [kpi_label(k)[1] for k in diffs["kpi"]])
        folder.write_table("differences", diffs)
        resolved = {n: sc.model_dump(mode="json", by_alias=True, exclude_none=True) for n, sc in scenarios.items()}
        params = differing_parameters(resolved)
        folder.write_table("parameters_differ", params)
        extra: dict = {}
        if plan.select is not None and len(scenarios) > 1:
            values = {n: per_rep[n][plan.kpi].to_numpy(dtype=float) for n in scenarios}
            sel = nelson_matejcik(values, plan.notes["select_first_stage"], plan.select["indifference"],
                                  plan.select["alpha"], plan.select["goal"], plan.kpi)
            extra["selection"] = sel.__dict__
            folder.write_json("selection.json", sel.__dict__)
        comparison_figures(folder, list(scenarios), diffs, plan.kpi)
        final = _finish(folder, plan, warmup, len(next(iter(results.values()))), report, kind="compare",
                        scenarios=list(scenarios), scenario_files=scenario_paths or {}, overrides=overrides or [],
                        horizon_days={n: s.horizon_days for n, s in scenarios.items()},
                        references={k: v for s in scenarios.values() for k, v in s.references.items()}, kpi=plan.kpi)
    return RunOutput(final, per_rep[next(iter(scenarios))], diffs, {"warmup": warmup, "params": params, **extra,
                                                                    "per_rep": per_rep})


def _files(folder: RunFolder) -> list[str]:
    return sorted(str(p.relative_to(folder.path)) for p in folder.path.rglob("*") if p.is_file())
