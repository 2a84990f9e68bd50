"""Parameter sweeps: a design over scenario factors, run locally or on Dask, resumable.

A sweep file names a base scenario, the factors (dotted paths into it), a
design and the replications per point.  Every point runs the same replication
numbers with the same seed, so points share common random numbers.  Each
finished point is written at once as its own Parquet part (atomically), so a
sweep killed part-way loses only the points in flight, and re-running the same
command skips the points already stored.  Local worker processes and a Dask
cluster run the same pure function, so results are identical either way.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os

import time
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np
from iopsim.lazy import pandas as pd
from pydantic import Field, ValidationError, model_validator

from iopsim.schema.base import FieldError as _FieldErr
from iopsim.schema.base import FrozenModel
from iopsim.schema.limits import limit, over
from iopsim.errors import IopsimError, ScenarioError
from iopsim.analysis.sensitivity import morris_effects, sobol_indices
from iopsim.files import atomic_write_text, claim_results_folder, make_folder, manifest, read_manifest, safe_name
from iopsim.experiments.executor import Executor, Task, read_parts, write_part
from iopsim.experiments.replications import kpi_names, unknown_kpi
from iopsim.schema.scenario import Scenario, has_path, read_with_base, resolve_raw, set_path, validate_raw
from iopsim.analysis.stats import mean_ci, undefined_unless_all

log = logging.getLogger(__name__)


class Factor(FrozenModel):
    """A swept input: explicit ``values``, or a ``range`` [low, high] (``steps`` for a grid)."""

    values: list | None = Field(default=None, min_length=1)
    range: tuple[float, float] | None = None
    steps: Annotated[int, Field(ge=2)] | None = None
    integer: bool = False

    @model_validator(mode="after")
    def _one(self):
        if (self.values is None) == (self.range is None):
            raise ValueError("give either values (a list) or range: [low, high]")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range low must not exceed high (got {self.range[0]} > {self.range[1]})")
        if self.steps is not None and self.range is None:
            raise ValueError("steps applies to a range")
        return self


class Design(FrozenModel):
    """How points are chosen.

    * ``grid`` -- every combination (ranges need ``steps``);
    * ``lhs`` / ``sobol`` -- ``points`` points of a Latin hypercube / scrambled
      Sobol' sequence (``scipy.stats.qmc``) over the ranges;
    * ``saltelli`` -- the sample Sobol' sensitivity indices need (SALib),
      ``n`` base samples, n x (factors + 2) points;
    * ``morris`` -- ``n`` Morris trajectories on ``levels`` levels (SALib).
    """

    kind: Literal["grid", "lhs", "sobol", "saltelli", "morris"] = "grid"
    points: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    levels: Annotated[int, Field(ge=2)] = 4


class SweepFile(FrozenModel):
    base: str
    name: str | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    replications: Annotated[int, Field(ge=1)] = 3
    kpis: list[str] = Field(min_length=1)
    design: Design = Field(default_factory=Design)
    factors: dict[str, Factor] = Field(min_length=1)
    method: Literal["sobol", "morris"] | None = None

    @model_validator(mode="after")
    def _design_fits(self):
        kind = self.design.kind
        if kind == "grid":
            for path, f in self.factors.items():
                if f.range is not None and f.steps is None:
                    raise _FieldErr(f"factors.{path}.steps", "a grid needs steps for a range (or give values)")
        if kind in ("lhs", "sobol") and self.design.points is None:
            raise _FieldErr("design.points", f"required for a {kind} design")
        if kind in ("saltelli", "morris"):
            if self.design.n is None:
                raise _FieldErr("design.n", f"required for a {kind} design")
            for path, f in self.factors.items():
                if f.range is None:
                    raise _FieldErr(f"factors.{path}", f"a {kind} design needs a range, not values")
        if self.method == "sobol" and kind != "saltelli":
            raise _FieldErr("design.kind", "method: sobol needs design kind: saltelli")
        if self.method == "morris" and kind != "morris":
            raise _FieldErr("design.kind", "method: morris needs design kind: morris")
        # Bound the design before it is built (a billion points would be allocated first).
        k = len(self.factors)
        if kind == "grid":
            size, where = 1, "factors"
            for f in self.factors.values():
                size *= len(f.values) if f.values is not None else (f.steps or 1)
        elif kind in ("lhs", "sobol"):
            size, where = self.design.points, "design.points"
        elif kind == "saltelli":
            size, where = self.design.n * (k + 2), "design.n"
        else:
            size, where = self.design.n * (k + 1), "design.n"
        if size > limit("design_points"):
            raise _FieldErr(where, f"the design has {size:,} points: " + over("design_points", size))
        if self.replications > limit("replications"):
            raise _FieldErr("replications", over("replications", self.replications))
        return self

    def problem(self) -> dict:
        """The SALib problem definition (ranges only)."""
        return {"num_vars": len(self.factors), "names": list(self.factors),
                "bounds": [list(f.range) for f in self.factors.values()]}



def load_sweep(path: Path) -> tuple[SweepFile, dict, Scenario, str]:
    """Validate a sweep file and its base scenario; returns (sweep, base raw, base scenario, hash)."""
    path = Path(path)
    sweep, raw, base_path = read_with_base(path, SweepFile)
    base = validate_raw(resolve_raw(base_path), str(base_path))
    # Points are built on the validated base with every default written out, so a
    # factor may address a field (or list element) the base file leaves at its default.
    base_raw = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped = base.model_dump(mode="json", by_alias=True)
    for fpath in sweep.factors:
        if not has_path(dumped, fpath):
            raise ScenarioError(str(path), f"factors.{fpath}", f"no such field in the base scenario {sweep.base}")
    known = kpi_names(base)
    for i, kpi in enumerate(sweep.kpis):
        if kpi not in known:
            raise ScenarioError(str(path), f"kpis.{i}", unknown_kpi(kpi, known))
    digest = hashlib.sha256(json.dumps({"sweep": raw, "base": base_raw}, sort_keys=True, default=str).encode()).hexdigest()
    return sweep, base_raw, base, digest[:16]


def design_points(sweep: SweepFile) -> list[dict[str, object]]:
    """The design's points in a fixed order (point id = position)."""
    names = list(sweep.factors)
    factors = list(sweep.factors.values())
    d = sweep.design
    if d.kind == "grid":
        axes = [f.values if f.values is not None else list(np.linspace(f.range[0], f.range[1], f.steps)) for f in factors]
        rows = [list(c) for c in itertools.product(*axes)]
    elif d.kind in ("lhs", "sobol"):
        from scipy.stats import qmc

        eng = qmc.LatinHypercube(len(names), seed=sweep.seed) if d.kind == "lhs" else qmc.Sobol(
            len(names), scramble=True, seed=sweep.seed)
        u = eng.random(d.points)
        rows = [[_from_unit(f, x) for f, x in zip(factors, row)] for row in u]
    elif d.kind == "saltelli":
        from SALib.sample import sobol as sobol_sample

        x = sobol_sample.sample(sweep.problem(), d.n, calc_second_order=False, seed=sweep.seed)
        rows = x.tolist()
    else:
        from SALib.sample import morris as morris_sample

        x = morris_sample.sample(sweep.problem(), d.n, num_levels=d.levels, seed=sweep.seed)
        rows = x.tolist()
    out = []
    for row in rows:
        point = {}
        for name, f, v in zip(names, factors, row):
            v = v.item() if hasattr(v, "item") else v
            if f.integer and isinstance(v, float):
                v = int(round(v))
            point[name] = v
        out.append(point)
    return out


def _from_unit(f: Factor, x: float):
    if f.values is not None:
        return f.values[min(int(x * len(f.values)), len(f.values) - 1)]
    return f.range[0] + x * (f.range[1] - f.range[0])


def point_scenario(base_raw: dict, point: dict, source: str) -> Scenario:
    raw = copy.deepcopy(base_raw)
    try:
        for path, value in point.items():
            set_path(raw, path.split("."), value, source)
        return validate_raw(raw, source)
    except ScenarioError as exc:
        values = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise ScenarioError(source, exc.field, f"{exc.message} (at point {values})") from None


# --------------------------------------------------------------------------- running


def _part(folder: Path, point_id: int) -> Path:
    return folder / "points" / f"point-{point_id:06d}.parquet"


def done_points(folder: Path) -> set[int]:
    d = folder / "points"
    if not d.exists():
        return set()
    return {int(p.stem.split("-")[1]) for p in d.glob("point-*.parquet")}


def _write_part(folder: Path, point_id: int, point: dict, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    for k, v in point.items():
        df.insert(2, f"factor:{k}", [v] * len(df) if not isinstance(v, (list, dict)) else [json.dumps(v)] * len(df))
    write_part(_part(folder, point_id), df)


def execute_sweep(
    sweep_path: Path,
    out_dir: Path | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    """Run (or resume) a sweep.  Returns a summary dict (folder, points, failures)."""
    # The executor starts its pool first: the fork server imports the simulator
    # while the sweep is being validated, instead of after.
    with Executor(jobs, scheduler) as executor:
        return _execute(sweep_path, out_dir, jobs, scheduler, progress, executor)


def _execute(sweep_path, out_dir, jobs, scheduler, progress, executor: Executor) -> dict:
    sweep, base_raw, base, digest = load_sweep(sweep_path)
    name = sweep.name or Path(sweep_path).stem
    folder = Path(out_dir) if out_dir is not None else Path("outputs") / f"sweep-{safe_name(name, 'sweep')}"
    points = design_points(sweep)
    scenarios = [point_scenario(base_raw, p, str(sweep_path)) for p in points]  # all validated before any run
    mpath = folder / "manifest.json"
    claim_results_folder(folder, "sweep", digest, "sweep")
    make_folder(folder)
    atomic_write_text(mpath, json.dumps(manifest(
        kind="sweep", sweep=name, sweep_file=str(sweep_path), sweep_hash=digest, seed=sweep.seed,
        replications=sweep.replications, design=sweep.design.model_dump(), factors={k: f.model_dump() for k, f in sweep.factors.items()},
        points=len(points), kpis=sweep.kpis, method=sweep.method, scheduler=scheduler, jobs=jobs,
        references=base.references,
    ), indent=2, default=str) + "\n")
    atomic_write_text(folder / "design.json", json.dumps(points, indent=1, default=str) + "\n")
    finished = done_points(folder)
    pending = [i for i in range(len(points)) if i not in finished]
    failures: list[dict] = []
    n_done = len(finished)
    if progress:
        progress(n_done, len(points), 0)
    t0 = time.perf_counter()

    def handle(task: Task, res: dict) -> None:
        nonlocal n_done
        pid = task.tags["point_id"]
        if res["error"] is None:
            _write_part(folder, pid, points[pid], res["rows"])
            n_done += 1
        else:
            failures.append({"point_id": pid, "factors": points[pid], "error": res["error"]})
            log.warning("point %d failed (%s): %s", pid, points[pid], res["error"])
        if progress:
            progress(n_done, len(points), len(failures))

    executor.map([Task(f"point-{pid:06d}", scenarios[pid], sweep.seed, 0, sweep.replications, {"point_id": pid})
                  for pid in pending], handle)
    elapsed = time.perf_counter() - t0
    atomic_write_text(folder / "failures.json", json.dumps(failures, indent=2, default=str) + "\n")
    summary = collect(folder, sweep, points)
    result = {"folder": folder, "points": len(points), "ran": len(pending) - len(failures), "skipped": len(finished),
              "failures": failures, "elapsed_s": elapsed, "summary": summary, "sweep": sweep}
    if sweep.method is not None and not failures:
        result["sensitivity"] = analyse_sweep(folder)
    return result


def load_results(folder: Path) -> pd.DataFrame:
    res = read_parts(Path(folder) / "points", "point-*.parquet")
    return res.sort_values(["point_id", "replication"], ignore_index=True) if len(res) else res


def collect(folder: Path, sweep: SweepFile, points: list[dict]) -> pd.DataFrame:
    """Write results.parquet (all rows) and points.csv (mean and CI per point and KPI); return the latter."""
    res = load_results(folder)
    if not len(res):
        return pd.DataFrame()
    tmp = folder / ".results.parquet.tmp"
    res.to_parquet(tmp, index=False)
    os.replace(tmp, folder / "results.parquet")
    rows = []
    for pid, g in res.groupby("point_id"):
        row = {"point_id": int(pid), **{f"factor:{k}": v for k, v in points[int(pid)].items()}}
        for kpi in sweep.kpis:
            m, _sd, lo, hi, n = mean_ci(g[kpi].to_numpy(dtype=float), all_or_nothing=undefined_unless_all(kpi))
            row.update({kpi: m, f"{kpi}:ci_low": lo, f"{kpi}:ci_high": hi})
        row["replications"] = len(g)
        rows.append(row)
    summary = pd.DataFrame(rows)
    atomic_write_text(folder / "points.csv", summary.to_csv(index=False))
    return summary


def analyse_sweep(folder: Path) -> pd.DataFrame:
    """Indices for every KPI of a finished sensitivity sweep; writes sensitivity.csv.

    Returns the table, one row per KPI and factor; the figures are drawn by
    :func:`iopsim.outputs.figures.sensitivity_figures`.
    """
    folder = Path(folder)
    man = read_manifest(folder, "sweep")
    if man.get("kind") != "sweep" or man.get("method") not in ("sobol", "morris"):
        raise IopsimError(f"{folder}: not a sensitivity sweep (the sweep file needs method: sobol or morris)")
    try:
        sweep = SweepFile.model_validate({
            "base": "-", "seed": man["seed"], "replications": man["replications"], "kpis": man["kpis"],
            "design": man["design"], "factors": man["factors"], "method": man["method"],
        })
    except (KeyError, TypeError, ValidationError):
        raise IopsimError(f"{folder}: manifest.json is damaged (the sweep's design is missing or invalid); "
                          "re-run the sweep into a new folder") from None
    points = design_points(sweep)
    res = load_results(folder)
    have = set(res["point_id"].unique()) if len(res) else set()
    missing = [i for i in range(len(points)) if i not in have]
    if missing:
        raise IopsimError(f"{folder}: {len(missing)} of {len(points)} points are missing; re-run the sweep to finish it")
    means = res.groupby("point_id")[sweep.kpis].mean().sort_index()
    problem = sweep.problem()
    x = np.array([[p[n] for n in problem["names"]] for p in points], dtype=float)
    frames = []
    for kpi in sweep.kpis:
        y = means[kpi].to_numpy(dtype=float)
        if not np.all(np.isfinite(y)):
            raise IopsimError(f"{folder}: KPI {kpi} is undefined (NaN) at some points; choose another KPI")
        df = sobol_indices(problem, y, sweep.seed) if sweep.method == "sobol" else morris_effects(
            problem, x, y, sweep.design.levels, sweep.seed)
        frames.append(df.assign(kpi=kpi))
    out = pd.concat(frames, ignore_index=True)
    out = out[["kpi", *[c for c in out.columns if c != "kpi"]]]
    atomic_write_text(folder / "sensitivity.csv", out.to_csv(index=False))
    return out
