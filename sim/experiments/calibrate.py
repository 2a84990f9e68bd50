"""Calibration of a scenario to published targets: ABC-SMC with pyabc, resumable.

A calibration file names a base scenario, the free parameters (dotted paths,
as sweep factors) with bounds and priors, the targets and a budget::

    name: established
    base: ../scenarios/established.yaml
    targets: targets.yaml                 # a targets file, or a list of targets inline
    only: [iop-census, iop-mean-stay]     # optional: a subset of the file's targets
    parameters:
      referrals.referrals_per_week: {low: 3.0, high: 6.0}
      stages.iop.tracks.day.attendance.0: {low: 0.6, high: 0.9, also: [stages.iop.tracks.evening.attendance.0]}
    replications: 4                       # per evaluation, the same numbers and seed every time (CRN)
    seed: 1
    budget: {populations: 5, population_size: 40, evaluations: 600, minutes: 15}

Every evaluation runs replications ``0 .. replications-1`` with the same seed,
so two parameter sets are compared on common random numbers and the
simulation noise of the distance is the same everywhere.  The distance is the
root mean square of the targets' standardised deviations,
``(mean simulated - target) / tolerance`` (the middle and half-width of a
range), as :func:`iopsim.analysis.calibration.distance` defines it.

pyabc (``pip install pyabc``) is imported only when a calibration runs.  Its
history database, ``abc.db`` in the output folder, is written after every
population, so a calibration that is interrupted resumes from the last finished
population when the same command is run again with the same folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np
from iopsim.lazy import pandas as pd
from pydantic import Field, ValidationError, model_validator

from iopsim.analysis.calibration import METRICS, Target, Targets, distance, load_targets, replication_metrics
from iopsim.analysis.stats import mean_ci
from iopsim.errors import IopsimError, ScenarioError
from iopsim.engine.model import Model
from iopsim.experiments.executor import Executor, check_scheduler
from iopsim.files import atomic_write_text, claim_results_folder, make_folder, manifest, read_manifest, safe_name
from iopsim.schema.base import FieldError as _FieldErr
from iopsim.schema.base import FrozenModel
from iopsim.schema.limits import file_problem, limit, over
from iopsim.schema.scenario import (
    Scenario,
    _format_validation_error,
    get_path,
    has_path,
    read_with_base,
    resolve_raw,
    set_path,
    validate_raw,
)

log = logging.getLogger(__name__)

#: Name of the pyabc history database in a calibration folder.
DB_NAME = "abc.db"


class Parameter(FrozenModel):
    """A free parameter: bounds, a prior within them, and optionally other paths that take the same value."""

    low: float
    """Lower bound: the prior has no mass below it."""
    high: float
    """Upper bound: the prior has no mass above it."""
    prior: Literal["uniform", "loguniform", "normal"] = "uniform"
    """Prior between the bounds: uniform, log-uniform (low > 0), or normal with mean and sd, truncated to the bounds."""
    mean: float | None = None
    """Mean of a normal prior (before truncation to the bounds)."""
    sd: Annotated[float, Field(gt=0)] | None = None
    """Standard deviation of a normal prior (before truncation)."""
    integer: bool = False
    """Round the value to a whole number before it is set (capacities, headcounts)."""
    also: list[str] = Field(default_factory=list)
    """Other dotted paths set to the same value (e.g. the attendance of a second track)."""
    label: str | None = None
    """Words for the parameter in tables and figures (default: its path)."""

    @model_validator(mode="after")
    def _bounds(self):
        if not self.low < self.high:
            raise ValueError(f"low must be below high (got low {self.low:g}, high {self.high:g})")
        if self.prior == "loguniform" and self.low <= 0:
            raise _FieldErr("low", f"a loguniform prior needs low > 0 (got {self.low:g})")
        if self.prior == "normal":
            if self.mean is None or self.sd is None:
                raise _FieldErr("prior", "a normal prior needs mean and sd")
        elif self.mean is not None or self.sd is not None:
            raise _FieldErr("prior", f"mean and sd apply to a normal prior only (prior is {self.prior})")
        return self

    def rv_args(self) -> tuple[str, tuple[float, ...]]:
        """The scipy.stats name and arguments of the prior (as pyabc.RV takes them)."""
        lo, hi = self.low, self.high
        if self.prior == "uniform":
            return "uniform", (lo, hi - lo)
        if self.prior == "loguniform":
            return "loguniform", (lo, hi)
        return "truncnorm", ((lo - self.mean) / self.sd, (hi - self.mean) / self.sd, self.mean, self.sd)

    def frozen(self):
        """The prior as a frozen scipy.stats distribution."""
        from scipy import stats

        name, args = self.rv_args()
        return getattr(stats, name)(*args)


class Budget(FrozenModel):
    """When the calibration stops: whichever limit comes first."""

    populations: Annotated[int, Field(ge=1)] = 5
    """Generations of the sequential Monte Carlo (each with a smaller distance threshold)."""
    population_size: Annotated[int, Field(ge=2)] = 40
    """Accepted parameter sets per generation (particles)."""
    evaluations: Annotated[int, Field(ge=1)] | None = None
    """Most parameter sets to simulate, over all generations (each runs `replications` replications)."""
    minutes: Annotated[float, Field(gt=0)] | None = None
    """Most wall-clock minutes of this command (a resumed calibration gets the same again)."""
    min_epsilon: Annotated[float, Field(ge=0)] = 0.0
    """Stop when the distance threshold reaches this (1: every target on average within its tolerance)."""


class CalibrationFile(FrozenModel):
    """A calibration file: base scenario, free parameters, targets, budget."""

    base: str
    """The scenario to calibrate, relative to this file."""
    name: str | None = None
    """Name of the calibration (default: the file's name); used for the output folder."""
    targets: str | list = Field(min_length=1)
    """A targets file relative to this file (the format of calibration/targets.yaml), or a list of targets inline."""
    only: list[str] | None = Field(default=None, min_length=1)
    """Ids of the targets to fit (default: all of them)."""
    parameters: dict[str, Parameter] = Field(min_length=1)
    """Free parameters by dotted path (as sweep factors), with bounds and priors."""
    replications: Annotated[int, Field(ge=1)] = 4
    """Replications per evaluation: the same replication numbers and seed for every parameter set."""
    check_replications: Annotated[int, Field(ge=2)] | None = None
    """Replications of the final check of the point estimate (default: twice `replications`, at least 10)."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of the simulations (every evaluation) and of the sampler's proposals."""
    budget: Budget = Field(default_factory=Budget)
    """When to stop."""

    @model_validator(mode="after")
    def _sizes(self):
        for name in ("replications", "check_replications"):
            value = getattr(self, name)
            if value is not None and value > limit("replications"):
                raise _FieldErr(name, over("replications", value))
        if self.budget.population_size > limit("design_points"):
            raise _FieldErr("budget.population_size", over("design_points", self.budget.population_size))
        return self

    @property
    def checks(self) -> int:
        return self.check_replications or max(2 * self.replications, 10)


@dataclass
class Spec:
    """A validated calibration file with its base scenario and targets."""

    path: Path
    file: CalibrationFile
    name: str
    base_path: Path
    base_raw: dict
    base: Scenario
    targets: list[Target]
    digest: str

    @property
    def paths(self) -> list[str]:
        return list(self.file.parameters)

    @property
    def parameters(self) -> list[Parameter]:
        return list(self.file.parameters.values())

    def label(self, path: str) -> str:
        return self.file.parameters[path].label or path


def load_spec(path: str | Path) -> Spec:
    """Validate a calibration file, its base scenario and its targets (one-line errors naming file and field)."""
    path = Path(path)
    cf, raw, base_path = read_with_base(path, CalibrationFile)
    base = validate_raw(resolve_raw(base_path), str(base_path))
    base_raw = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped = base.model_dump(mode="json", by_alias=True)
    for p, par in cf.parameters.items():
        for i, q in enumerate([p, *par.also]):
            field = f"parameters.{p}" if i == 0 else f"parameters.{p}.also.{i - 1}"
            if not has_path(dumped, q):
                raise ScenarioError(str(path), field, f"no such field in the base scenario {cf.base}: {q}")
            value = get_path(dumped, q)
            if isinstance(value, bool) or not isinstance(value, (int, float)) and value is not None:
                raise ScenarioError(str(path), field, f"{q} is not a number in the base scenario (it is {type(value).__name__}); "
                                    "a free parameter must be a number")
    if isinstance(cf.targets, str):
        tpath = path.parent / cf.targets
        problem = file_problem(tpath)
        if problem is not None:
            raise ScenarioError(str(path), "targets", problem)
        targets = load_targets(tpath).targets
    else:
        traw = {"targets": cf.targets}
        try:
            targets = Targets.model_validate(traw).targets
        except ValidationError as exc:
            f, msg = _format_validation_error(exc, traw)
            raise ScenarioError(str(path), f or "targets", msg) from None
    if cf.only is not None:
        ids = [t.id for t in targets]
        for i, tid in enumerate(cf.only):
            if tid not in ids:
                raise ScenarioError(str(path), f"only.{i}", f"no target {tid!r}; allowed: {', '.join(ids)}")
        targets = [t for t in targets if t.id in cf.only]
    name = cf.name or path.stem
    # The budget is left out: raising it and running again continues the same calibration.  The order
    # of the parameters is in: they are pyabc's p0, p1, ... in that order, in the stored populations.
    what = {k: v for k, v in raw.items() if k != "budget"}
    digest = hashlib.sha256(json.dumps({"file": what, "order": list(cf.parameters), "base": base_raw,
                                        "targets": [t.model_dump() for t in targets]},
                                       sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Spec(path, cf, name, base_path, base_raw, base, targets, digest)


# --------------------------------------------------------------------------- evaluating


class Simulator:
    """Simulates the targets' metrics for a parameter set (picklable: it runs in pyabc's workers).

    ``theta`` maps the spec's paths to values; pyabc's own names are ``p0``,
    ``p1``, ... in the spec's order.
    """

    def __init__(self, spec: Spec):
        self.base_raw = spec.base_raw
        self.source = str(spec.path)
        self.paths = spec.paths
        self.parameters = spec.parameters
        self.targets = spec.targets
        self.replications = spec.file.replications
        self.seed = spec.file.seed

    def values(self, theta: dict[str, float]) -> dict[str, float | int]:
        """The values as set in the scenario (integers rounded), by path, ``also`` paths included."""
        out: dict[str, float | int] = {}
        for path, par in zip(self.paths, self.parameters):
            v = float(theta[path])
            v = int(round(v)) if par.integer else v
            for q in (path, *par.also):
                out[q] = v
        return out

    def scenario(self, theta: dict[str, float]) -> Scenario:
        raw = copy.deepcopy(self.base_raw)
        for q, v in self.values(theta).items():
            set_path(raw, q.split("."), v, self.source)
        return validate_raw(raw, self.source)

    def replication(self, sc: Scenario, replication: int, seed: int | None = None) -> dict:
        """The targets' metrics of one replication of ``sc`` (by target id), and its number.

        Only the records are built: the targets' metrics are computed from them,
        the run's KPIs are not needed.
        """
        records = Model(sc, replication, self.seed if seed is None else seed).run()
        m = replication_metrics(records, sc, {t.metric for t in self.targets})
        return {"replication": replication, **{t.id: m[t.metric] for t in self.targets}}

    def metrics(self, theta: dict[str, float], replications: range, seed: int | None = None) -> pd.DataFrame:
        """Per-replication metrics of the targets (columns: target ids)."""
        sc = self.scenario(theta)
        return pd.DataFrame([self.replication(sc, r, seed) for r in replications])

    def __call__(self, parameter) -> dict[str, float]:
        """pyabc's model: the mean of each target's metric over the replications (NaN if the set is invalid)."""
        theta = {path: float(parameter[f"p{i}"]) for i, path in enumerate(self.paths)}
        try:
            df = self.metrics(theta, range(self.replications))
        except ScenarioError as exc:  # e.g. exit probabilities that no longer sum to at most 1
            log.info("invalid parameter set %s: %s", theta, exc)
            return {t.id: math.nan for t in self.targets}
        return {t.id: float(np.nanmean(df[t.id])) if df[t.id].notna().any() else math.nan for t in self.targets}


class TargetDistance:
    """pyabc's distance: :func:`iopsim.analysis.calibration.distance` of the simulated means from the targets."""

    def __init__(self, targets: list[Target]):
        self.targets = targets

    def __call__(self, x: dict, x_0: dict) -> float:
        return distance(x, self.targets)


def met_count(values: dict[str, float], targets: list[Target]) -> int:
    return sum(bool(t.met(float(values.get(t.id, math.nan)))) for t in targets)


# --------------------------------------------------------------------------- running


def _check_folder(folder: Path, spec: Spec) -> bool:
    """True if ``folder`` holds this calibration (resume); refuse a folder of anything else."""
    claim_results_folder(folder, "calibration", spec.digest, "calibration")
    return (folder / "manifest.json").exists() and (folder / DB_NAME).exists()


def default_folder(spec: Spec) -> Path:
    return Path("outputs") / f"calibration-{safe_name(spec.name, 'calibration')}"


def run_calibration(
    spec_path: str | Path,
    out_dir: str | Path | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, float, int], None] | None = None,
) -> dict:
    """Run (or resume) the ABC-SMC calibration a calibration file describes; write the tables.

    Returns a dict with the folder, the posterior (a DataFrame of the last
    population's particles by path, with ``weight``), the populations table,
    the fit table and the identifiability table.  Figures, the calibrated
    scenario and the report are written by :mod:`iopsim.outputs`.
    """
    if scheduler is not None:
        check_scheduler(scheduler)
    spec = load_spec(spec_path)
    folder = Path(out_dir) if out_dir is not None else default_folder(spec)
    resume = _check_folder(folder, spec)
    try:
        import pyabc
    except ImportError as exc:
        missing = (exc.name or "pyabc").split(".")[0]
        if missing == "pyabc":
            raise IopsimError("calibration needs pyabc, an optional dependency: pip install 'iopsim[calibrate]'") \
                from None
        raise IopsimError(f"calibration needs pyabc, which cannot import {missing!r}: {exc}; "
                          f"pip install 'iopsim[calibrate]'") from None
    _quiet_pyabc()
    make_folder(folder)
    atomic_write_text(folder / "manifest.json", json.dumps(manifest(
        kind="calibration", calibration=spec.name, calibration_file=str(spec.path), calibration_hash=spec.digest,
        base=str(spec.base_path), scenario=spec.base.name, seed=spec.file.seed, replications=spec.file.replications,
        parameters={p: par.model_dump() for p, par in spec.file.parameters.items()},
        targets=[t.id for t in spec.targets], budget=spec.file.budget.model_dump(), jobs=jobs, scheduler=scheduler,
        references=spec.base.references,
    ), indent=2, default=str) + "\n")
    from iopsim.experiments.abc_sampler import ExecutorSampler

    sim = Simulator(spec)
    prior = pyabc.Distribution(**{f"p{i}": pyabc.RV(*_rv(par)) for i, par in enumerate(spec.parameters)})
    budget = spec.file.budget
    t0 = time.perf_counter()
    with Executor(jobs, scheduler) as executor:
        abc = pyabc.ABCSMC(sim, prior, TargetDistance(spec.targets), population_size=budget.population_size,
                           sampler=ExecutorSampler(executor, spec.file.seed))
        db = "sqlite:///" + str((folder / DB_NAME).resolve())
        if resume:
            history = abc.load(db, 1)
            log.info("resuming %s after population %d", folder, history.max_t)
        else:
            history = abc.new(db, {t.id: t.centre for t in spec.targets})
        done = history.max_t + 1 if history.max_t is not None else 0
        remaining = budget.populations - done
        evaluations = budget.evaluations if budget.evaluations is not None else np.inf
        if remaining > 0 and history.total_nr_simulations < evaluations:
            history = abc.run(minimum_epsilon=budget.min_epsilon, max_nr_populations=remaining,
                              max_total_nr_simulations=evaluations,
                              max_walltime=_walltime(budget.minutes))
        elapsed = time.perf_counter() - t0
        if history.max_t is None or history.max_t < 0:
            raise IopsimError(f"{folder}: no population finished within the budget; raise budget.minutes or budget.evaluations")
        return summarise(folder, spec, history, executor, elapsed)


def _quiet_pyabc() -> None:
    """pyabc logs every population with handlers of its own: route its records through ours, at our level."""
    level = max(logging.getLogger("iopsim").getEffectiveLevel(), logging.INFO)
    for name in ("ABC", "ABC.History", "ABC.Sampler", "ABC.Distance", "ABC.Epsilon", "ABC.Population", "ABC.Transition",
                 "ABC.Predictor", "ABC.Model", "ABC.Acceptor"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.setLevel(level)
        lg.propagate = True


def _rv(par: Parameter):
    name, args = par.rv_args()
    return (name, *args)


def _walltime(minutes: float | None):
    if minutes is None:
        return None
    from datetime import timedelta

    return timedelta(minutes=minutes)


# --------------------------------------------------------------------------- summarising


def weighted_quantile(x: np.ndarray, w: np.ndarray, q) -> np.ndarray:
    """Quantiles of weighted samples (midpoint rule on the sorted cumulative weights)."""
    x = np.asarray(x, dtype=float)
    w = np.asarray(w, dtype=float)
    ok = np.isfinite(x)
    x, w = x[ok], w[ok]
    if not len(x):
        return np.full(np.shape(q), np.nan)
    order = np.argsort(x)
    x, w = x[order], w[order]
    c = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(q, c, x)


def ess(w: np.ndarray) -> float:
    """Effective sample size of importance weights: (sum w)^2 / sum w^2."""
    w = np.asarray(w, dtype=float)
    return float(w.sum() ** 2 / (w**2).sum()) if len(w) and (w**2).sum() > 0 else 0.0


def summarise(folder: Path, spec: Spec, history, executor: Executor, elapsed: float = 0.0) -> dict:
    """Posterior, populations, point estimate checked with fresh replications, fit and identifiability tables."""
    df, w = history.get_distribution(m=0)
    w = np.asarray(w, dtype=float)
    w = w / w.sum()
    post = pd.DataFrame({path: df[f"p{i}"].to_numpy(dtype=float) for i, path in enumerate(spec.paths)})
    post["weight"] = w
    atomic_write_text(folder / "posterior.csv", post.to_csv(index=False))
    pops = history.get_all_populations()
    pops = pops[pops["t"] >= 0][["t", "epsilon", "samples"]].reset_index(drop=True)
    ess_by_t = []
    for t in pops["t"]:
        _, wt = history.get_distribution(m=0, t=int(t))
        ess_by_t.append(ess(np.asarray(wt)))
    pops["ess"] = ess_by_t
    pops = pops.rename(columns={"t": "population", "samples": "evaluations"})
    atomic_write_text(folder / "populations.csv", pops.to_csv(index=False))
    point = {p: float(weighted_quantile(post[p], w, 0.5)) for p in spec.paths}
    sim = Simulator(spec)
    values = sim.values(point)
    # The point estimate checked with fresh replications (numbers after those the fit used).
    n = spec.file.checks
    check = _check_point(sim, point, range(spec.file.replications, spec.file.replications + n), executor)
    atomic_write_text(folder / "check.csv", check.to_csv(index=False))
    weights, stats = history.get_weighted_sum_stats()
    weights = np.asarray(weights, dtype=float)
    fit = fit_table(spec.targets, stats, weights, check)
    atomic_write_text(folder / "fit.csv", fit.to_csv(index=False))
    ident = identifiability(spec, post, w)
    atomic_write_text(folder / "identifiability.csv", ident.to_csv(index=False))
    summary = {
        "calibration": spec.name, "populations": int(len(pops)), "evaluations": int(history.total_nr_simulations),
        "replications_per_evaluation": spec.file.replications, "simulated_replications":
            int(history.total_nr_simulations) * spec.file.replications + n,
        "epsilon": float(pops["epsilon"].iloc[-1]), "ess": float(pops["ess"].iloc[-1]),
        "wall_seconds_this_command": round(elapsed, 1), "point": point, "values": values,
        "targets_met": int(fit["met"].sum()), "targets": len(fit), "check_replications": n,
    }
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return {"folder": folder, "spec": spec, "posterior": post, "populations": pops, "fit": fit,
            "identifiability": ident, "summary": summary}


def _check_point(sim: Simulator, theta: dict, reps: range, executor: Executor) -> pd.DataFrame:
    sc = sim.scenario(theta)
    return pd.DataFrame(list(executor.ordered(Simulator.replication, ((sc, r) for r in reps), shared=sim)))


def fit_table(targets: list[Target], stats: list[dict], weights: np.ndarray, check: pd.DataFrame) -> pd.DataFrame:
    """Per target: the posterior predictive (the accepted particles' simulated means: median and 90 %
    interval) and the point estimate's check (mean and 95 % CI over fresh replications), met or not."""
    rows = []
    for t in targets:
        sims = np.array([float(s.get(t.id, math.nan)) for s in stats])
        lo, med, hi = weighted_quantile(sims, weights, [0.05, 0.5, 0.95])
        mean, _sd, clo, chi, n = mean_ci(check[t.id].to_numpy(dtype=float))
        rows.append({
            "id": t.id, "metric": t.metric, "target": t.describe(), "centre": t.centre, "tolerance": t.scale,
            "posterior_median": med, "posterior_p05": lo, "posterior_p95": hi,
            "point_mean": mean, "point_ci_low": clo, "point_ci_high": chi, "point_replications": n,
            "z": t.z(mean), "met": bool(t.met(mean)), "source": t.source,
        })
    return pd.DataFrame(rows)


#: Posterior-to-prior width ratio below which a parameter counts as pinned by the targets, and above which not identified.
PINNED, NOT_IDENTIFIED = 0.5, 0.8


def identifiability(spec: Spec, post: pd.DataFrame, w: np.ndarray) -> pd.DataFrame:
    """Per parameter: prior and posterior 90 % intervals, their width ratio, and a sentence."""
    rows = []
    for path, par in zip(spec.paths, spec.parameters):
        prior = par.frozen()
        plo, phi = float(prior.ppf(0.05)), float(prior.ppf(0.95))
        lo, med, hi = weighted_quantile(post[path], w, [0.05, 0.5, 0.95])
        ratio = (hi - lo) / (phi - plo) if phi > plo else math.nan
        rel = (hi - lo) / 2 / abs(med) if med else math.nan
        rows.append({"parameter": path, "label": spec.label(path), "prior_p05": plo, "prior_p95": phi,
                     "posterior_p05": lo, "posterior_median": med, "posterior_p95": hi, "width_ratio": ratio,
                     "relative_half_width": rel, "verdict": _verdict(ratio),
                     "sentence": identifiability_sentence(spec.label(path), ratio, rel, lo, hi)})
    return pd.DataFrame(rows)


def _verdict(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "unknown"
    return "pinned" if ratio < PINNED else "not identified" if ratio > NOT_IDENTIFIED else "partly identified"


def identifiability_sentence(label: str, ratio: float, rel: float, lo: float, hi: float) -> str:
    v = _verdict(ratio)
    span = f"{lo:.3g} to {hi:.3g}"
    if v == "pinned":
        pm = f"±{100 * rel:.0f} %" if rel >= 0.005 else "±<1 %"
        return f"{label} is pinned to {pm} ({span}, 90 % of the posterior; {100 * ratio:.0f} % of the prior's width)."
    if v == "partly identified":
        return f"{label} is only partly identified: {span} (90 % of the posterior; {100 * ratio:.0f} % of the prior's width)."
    if v == "not identified":
        return (f"{label} is not identified by these targets: the posterior ({span}) is nearly as wide as the prior "
                f"({100 * ratio:.0f} %).")
    return f"{label}: no posterior width could be computed."


def metric_names() -> list[str]:
    return sorted(METRICS)


# --------------------------------------------------------------------------- parameter uncertainty carried forward


class PosteriorDraws:
    """Parameter sets drawn from a calibration's posterior, one per replication (second-order Monte Carlo).

    Replication ``r`` draws a particle of the last population with probability
    its weight, from a random stream seeded by (seed, r) alone, so the same
    replication draws the same parameters in every scenario of a comparison
    (common random numbers still pair them) and on every run.  The drawn values
    are set at the calibration's dotted paths (integers rounded, ``also`` paths
    included) in whatever scenario is run, which must have those fields.
    """

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        man = read_manifest(folder, "calibration")
        if man.get("kind") != "calibration":
            raise IopsimError(f"{folder}: not a calibration folder (its manifest says {man.get('kind')!r})")
        path = folder / "posterior.csv"
        if not path.is_file():
            raise IopsimError(f"{folder}: posterior.csv missing; finish the calibration first (run it again with this --out)")
        try:
            post = pd.read_csv(path)
            self.parameters = {p: Parameter.model_validate(v) for p, v in man["parameters"].items()}
        except (KeyError, TypeError, ValueError, ValidationError):
            raise IopsimError(f"{folder}: posterior.csv or manifest.json is damaged; run the calibration again") from None
        missing = [p for p in self.parameters if p not in post.columns]
        if missing or "weight" not in post.columns or not len(post):
            raise IopsimError(f"{folder}: posterior.csv is damaged (columns {', '.join(missing) or 'weight'} missing)")
        w = post["weight"].to_numpy(dtype=float)
        if not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise IopsimError(f"{folder}: posterior.csv is damaged (weights)")
        self.folder = folder
        self.name = str(man.get("calibration", folder.name))
        self.particles = post[list(self.parameters)].to_numpy(dtype=float)
        self.cumulative = np.cumsum(w / w.sum())

    def index(self, replication: int, seed: int) -> int:
        """The particle replication ``replication`` draws."""
        u = np.random.default_rng([int(seed), int(replication), 0x2D0]).random()
        return int(min(np.searchsorted(self.cumulative, u, side="right"), len(self.cumulative) - 1))

    def values(self, replication: int, seed: int) -> dict[str, float | int]:
        row = self.particles[self.index(replication, seed)]
        out: dict[str, float | int] = {}
        for (path, par), v in zip(self.parameters.items(), row):
            v = int(round(v)) if par.integer else float(v)
            for q in (path, *par.also):
                out[q] = v
        return out

    def scenario(self, scenario: Scenario, replication: int, seed: int) -> Scenario:
        """``scenario`` with replication ``replication``'s draw set (one line naming the path if it has no such field)."""
        raw = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
        dumped = scenario.model_dump(mode="json", by_alias=True)
        source = f"--posterior {self.folder}"
        for q, v in self.values(replication, seed).items():
            if not has_path(dumped, q):
                raise ScenarioError(source, q, f"scenario {scenario.name!r} has no such field; the posterior sets it")
            set_path(raw, q.split("."), v, source)
        return validate_raw(raw, f"{scenario.name} with draw {self.index(replication, seed)} of {source}")

    def paths(self) -> list[str]:
        """Every scenario path a draw sets (each parameter's own and its ``also`` paths)."""
        return [q for path, par in self.parameters.items() for q in (path, *par.also)]

    def digest(self) -> str:
        """A short hash of the posterior's particles and weights (a resumed plan must use the same ones)."""
        return hashlib.sha256(np.ascontiguousarray(self.particles).tobytes()
                              + np.ascontiguousarray(self.cumulative).tobytes()).hexdigest()[:16]

    def describe(self) -> dict:
        return {"folder": str(self.folder), "calibration": self.name, "parameters": list(self.parameters),
                "particles": int(len(self.particles)), "digest": self.digest()}
