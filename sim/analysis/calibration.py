"""Calibration targets, the metrics they name, and the distance a fit minimises.

``calibration/targets.yaml`` lists targets (a value with an absolute tolerance,
or a range), each naming a *metric* computed here from a replication's records.
:func:`calibrate` checks a finished run folder: metrics are computed per
replication and summarised with a 95 % CI; a target is met when the mean lies
within ``target +/- tolerance`` or inside ``range``.
:func:`replication_metrics` and :func:`distance` are what the fit of
:mod:`iopsim.experiments.calibrate` evaluates, from records held in memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from iopsim.lazy import pandas as pd
from pydantic import Field, ValidationError, model_validator

from iopsim.schema.base import FrozenModel
from iopsim.errors import IopsimError, ScenarioError
from iopsim.files import read_manifest
from iopsim.schema.scenario import TREATMENT_STAGES, Scenario, _format_validation_error, read_yaml, validate_raw
from iopsim.analysis.access import _keys, admitted_waits, episode_rows, lost_after_assessment, referral_outcome_table
from iopsim.analysis.stats import mean_ci
from iopsim.engine.records import Records

STAY_OUTCOMES = ("completed", "dropped_out", "transferred", "terminated", "other", "relapsed")


class Target(FrozenModel):
    id: str
    metric: str
    target: float | None = None
    tolerance: Annotated[float, Field(ge=0)] | None = None
    range: tuple[float, float] | None = None
    description: str = ""
    source: str = ""
    confidence: str = ""

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.target is None) == (self.range is None):
            raise ValueError("give either target (with tolerance) or range")
        if self.target is not None and self.tolerance is None:
            raise ValueError("a target needs a tolerance")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError("range must be [low, high] with low <= high")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; allowed: {', '.join(sorted(METRICS))}")
        return self

    def met(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.range is not None:
            return self.range[0] <= value <= self.range[1]
        return abs(value - self.target) <= self.tolerance

    @property
    def centre(self) -> float:
        """The published value, or the middle of the range."""
        return float(self.target) if self.range is None else (self.range[0] + self.range[1]) / 2.0

    @property
    def scale(self) -> float:
        """The tolerance, or half the range: the distance from the centre at which the target stops being met."""
        half = float(self.tolerance) if self.range is None else (self.range[1] - self.range[0]) / 2.0
        return half if half > 0 else 1e-9

    def z(self, value: float) -> float:
        """Standardised deviation ``(value - centre) / scale``: met exactly when ``|z| <= 1``."""
        if not math.isfinite(value):
            return math.nan
        return (value - self.centre) / self.scale

    def describe(self) -> str:
        if self.range is not None:
            return f"{self.range[0]:g} to {self.range[1]:g}"
        return f"{self.target:g} ± {self.tolerance:g}"


class Targets(FrozenModel):
    targets: list[Target] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self):
        seen: set[str] = set()
        for t in self.targets:
            if t.id in seen:
                raise ValueError(f"target id {t.id!r} appears twice; ids must be unique")
            seen.add(t.id)
        return self


def load_targets(path: Path) -> Targets:
    path = Path(path)
    raw = read_yaml(path)
    try:
        return Targets.model_validate(raw)
    except ValidationError as exc:
        field, msg = _format_validation_error(exc, raw)
        raise ScenarioError(str(path), field or None, msg) from None


#: Standardised deviation given to a metric that cannot be computed (NaN) in the distance.
MISSING_Z = 10.0


def distance(values: dict[str, float], targets: list[Target]) -> float:
    """Root mean square of the standardised deviations of ``values`` (by target id) from the targets.

    Each deviation is ``(simulated - centre) / scale`` (:meth:`Target.z`): a
    distance of 1 is as far off as the tolerances on average; a target that
    cannot be computed counts as ``MISSING_Z`` tolerances away.
    """
    zs = []
    for t in targets:
        z = t.z(float(values.get(t.id, math.nan)))
        zs.append(MISSING_Z if not math.isfinite(z) else min(abs(z), MISSING_Z))
    return float(math.sqrt(sum(z * z for z in zs) / len(zs))) if zs else 0.0


# --------------------------------------------------------------------------- metrics


class _Rep:
    """The record tables of one replication, with the derived arrays metrics share.

    Several metrics read the same derived arrays (the ended IOP stays, the
    admitted waits, the ends of treatment); each is computed once per
    replication and then shared.  The metrics only read them.  Everything is
    read from the compact tables (:class:`iopsim.engine.records.Table`), so a
    calibration's evaluation builds no DataFrame; the reductions are the ones
    pandas made when the metrics read DataFrames (``np.nanmedian``, a sum over
    the count), so the values are the same to the last bit.
    """

    def __init__(self, records, sc: Scenario):
        self.sc = sc
        self.w0 = float(sc.warmup_days)
        self.horizon = float(sc.horizon_days)
        if not isinstance(records, Records):  # DataFrames (a run folder's): each read as a table once
            given = Records({})
            for name in ("visits", "episodes", "levels"):
                given[name] = records[name]
            records = given
        #: The replication's tables (what the access functions read too).
        self.records = records
        self._cache: dict = {}

    def _once(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def ended_stays(self, stage: str) -> dict[str, np.ndarray]:
        """The stays at ``stage`` that ended in the window: ``outcome``, ``stay`` (days) and ``next`` ("" for none)."""
        def make():
            v = self.records.table("visits")
            t_admit, t_leave = v["t_admit"], v["t_leave"]
            m = v.eq("stage", stage) & ~np.isnan(t_admit) & (t_leave >= self.w0) & v.isin("outcome", STAY_OUTCOMES)
            return {"outcome": v["outcome"][m], "stay": t_leave[m] - t_admit[m], "next": v["next"][m]}

        return self._once(("ended_stays", stage), make)

    def _index(self):
        """The episode index and first admissions the access functions share (as the KPIs share them)."""
        return self._once("episode_rows", lambda: episode_rows(self.records))

    def admitted_waits(self) -> np.ndarray:
        """Referral-to-admission days of episodes admitted to treatment in the window (one definition with the KPIs)."""
        return self._once("admitted_waits", lambda: admitted_waits(self.records, self.sc, self.w0,
                                                                   self._index()))

    def referral_outcomes(self):
        """Every episode referred in the window, admitted, lost or still waiting (as the access KPIs follow them)."""
        return self._once("referral_outcomes", lambda: referral_outcome_table(self.records, self.sc, self.w0,
                                                                          self._index()))

    def find_episodes(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the episodes with ``keys`` (:func:`iopsim.analysis.access._keys`) are: (row of each,
        whether there is one), through the episode index the access functions share."""
        order, sorted_keys, _ = self._index()
        if not len(sorted_keys):
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return order[pos], sorted_keys[pos] == keys

    def episode_column(self, name: str, keys: np.ndarray) -> np.ndarray:
        """Column ``name`` of the episodes with ``keys``, NaN where there is no such episode."""
        rows, found = self.find_episodes(keys)
        values = np.asarray(self.records.table("episodes")[name], dtype=float)
        return np.where(found, values[rows] if len(values) else np.nan, np.nan)

    def treatment_ends(self) -> dict[str, np.ndarray]:
        """Episodes that left treatment in the window: ``key`` (:func:`~iopsim.analysis.access._keys`), ``t_end``,
        ``outcome``, ``t_relapse``.

        Each episode's last treatment visit by the time it left (sorted by that time as
        pandas' ``sort_values`` sorts, then the last of each episode, as ``groupby().last()``).
        """
        def make():
            v = self.records.table("visits")
            t_admit, t_leave = v["t_admit"], v["t_leave"]
            m = v.isin("stage", TREATMENT_STAGES) & ~np.isnan(t_admit) & ~np.isnan(t_leave)
            keys, t_end, outcome = _keys(v["patient_id"][m], v["episode"][m]), t_leave[m], v["outcome"][m]
            order = np.argsort(t_end, kind="quicksort")
            keys, t_end, outcome = keys[order], t_end[order], outcome[order]
            _, first_from_end = np.unique(keys[::-1], return_index=True)
            last = len(keys) - 1 - first_from_end
            keys, t_end, outcome = keys[last], t_end[last], outcome[last]
            rows, found = self.find_episodes(keys)
            keep = found & (t_end >= self.w0)  # an inner join with the episodes
            t_relapse = np.asarray(self.records.table("episodes")["t_relapse"], dtype=float)[rows[keep]]
            return {"key": keys[keep], "t_end": t_end[keep], "outcome": outcome[keep], "t_relapse": t_relapse}

        return self._once("treatment_ends", make)


def _mean(values: np.ndarray) -> float:
    """The mean as pandas takes it (the sum over the count); NaN for no values."""
    return float(values.sum() / len(values)) if len(values) else math.nan


def _share(stage: str, outcome: str) -> Callable[[_Rep], float]:
    def f(r: _Rep) -> float:
        return _mean(r.ended_stays(stage)["outcome"] == outcome)

    return f


def _median_stay(stage: str, outcome: str | None = None) -> Callable[[_Rep], float]:
    def f(r: _Rep) -> float:
        s = r.ended_stays(stage)
        stay = s["stay"] if outcome is None else s["stay"][s["outcome"] == outcome]
        return float(np.nanmedian(stay)) if len(stay) else math.nan

    return f


def _census_mean(r: _Rep) -> float:
    lv = r.records.table("levels")
    m = lv.eq("stage", "iop") & (lv["day"] >= r.w0)
    return float(lv["census_mean"][m].sum() / (r.horizon - r.w0)) if m.any() else math.nan


def _iop_mean_weeks(r: _Rep) -> float:
    return _mean(r.ended_stays("iop")["stay"]) / 7.0


def _iop_admissions_per_year(r: _Rep) -> float:
    v = r.records.table("visits")
    n = int((v.eq("stage", "iop") & (v["t_admit"] >= r.w0)).sum())
    return n / ((r.horizon - r.w0) / 365.0)


def _wait_mean(r: _Rep) -> float:
    """Referral to first treatment admission, of those admitted: KPI ``referral_to_admission_mean_days_admitted``."""
    w = r.admitted_waits()
    return float(w.mean()) if w.size else math.nan


def _wait_over_30(r: _Rep) -> float:
    """Of those admitted, the share who waited over 30 days: KPI ``referral_share_admitted_waiting_over_30_days``."""
    w = r.admitted_waits()
    return float((w > 30).mean()) if w.size else math.nan


def _never_start(r: _Rep) -> float:
    """Of those assessed and placed in a treatment stage, the share lost before admission:
    KPI ``referral_lost_after_assessment``."""
    return lost_after_assessment(r.referral_outcomes())


def _residential_step_down(r: _Rep) -> float:
    nxt = r.ended_stays("residential")["next"]
    return _mean((nxt != "") & (nxt != "discharge"))


def _readmit_90(r: _Rep) -> float:
    """Share of episodes leaving treatment that return as a referral within 90 days.

    Only episodes whose treatment ended at least 90 days before the horizon
    count, so that every one of them had the full 90 days to return.
    """
    ends = r.treatment_ends()
    m = ends["t_end"] <= r.horizon - 90
    # The next episode of the same patient has the key one higher (access._keys: patient * 2**20 + episode).
    t_next = r.episode_column("t_referral", ends["key"][m] + 1)
    return _mean((t_next - ends["t_end"][m]) <= 90)


def _relapse_365(r: _Rep) -> float:
    """Share relapsing within a year, of those whose treatment ended with an
    outcome the scenario's relapse applies to, at least a year before the horizon."""
    if r.sc.relapse is None:
        return math.nan
    ends = r.treatment_ends()
    m = (ends["t_end"] <= r.horizon - 365) & np.isin(ends["outcome"], list(r.sc.relapse.after))
    return _mean((ends["t_relapse"][m] - ends["t_end"][m]) <= 365)


METRICS: dict[str, Callable[[_Rep], float]] = {
    **{f"iop_share_{o}": _share("iop", o) for o in ("completed", "transferred", "dropped_out", "terminated", "other")},
    "iop_median_stay_days": _median_stay("iop"),
    "iop_median_stay_days_completed": _median_stay("iop", "completed"),
    "iop_median_stay_days_dropped_out": _median_stay("iop", "dropped_out"),
    "residential_share_completed": _share("residential", "completed"),
    "residential_median_stay_days": _median_stay("residential"),
    "iop_census_mean": _census_mean,
    "iop_mean_stay_weeks": _iop_mean_weeks,
    "iop_admissions_per_year": _iop_admissions_per_year,
    "wait_to_treatment_mean_days": _wait_mean,
    "share_waiting_over_30_days": _wait_over_30,
    "share_never_starting_after_intake": _never_start,
    "residential_share_stepping_down": _residential_step_down,
    "readmission_within_90_days": _readmit_90,
    "relapse_within_365_days": _relapse_365,
}


def replication_metrics(records, sc: Scenario, metrics) -> dict[str, float]:
    """The named metrics of one replication, from its record tables (``visits``, ``episodes``, ``levels``):
    its :class:`~iopsim.engine.records.Records`, or a mapping of DataFrames."""
    rep = _Rep(records, sc)
    return {m: float(METRICS[m](rep)) for m in metrics}


def calibrate(run_dir: Path, targets_path: Path) -> pd.DataFrame:
    """Model value (mean and 95 % CI over replications) against each target."""
    run_dir = Path(run_dir)
    for name in ("scenario.yaml", "records.parquet", "episodes.parquet", "levels.parquet", "manifest.json"):
        if not (run_dir / name).exists():
            raise IopsimError(f"{run_dir}: not a finished run folder ({name} missing)")
    read_manifest(run_dir)
    targets = load_targets(targets_path)
    sc = validate_raw(read_yaml(run_dir / "scenario.yaml"), str(run_dir / "scenario.yaml"))
    try:
        visits = pd.read_parquet(run_dir / "records.parquet")
        episodes = pd.read_parquet(run_dir / "episodes.parquet")
        levels = pd.read_parquet(run_dir / "levels.parquet")
    except Exception as exc:  # pyarrow raises its own types for truncated files
        raise IopsimError(f"{run_dir}: a record table is damaged ({type(exc).__name__}); re-run into a new folder") from None
    reps = [_Rep({"visits": v, "episodes": episodes[episodes["replication"] == rep],
                  "levels": levels[levels["replication"] == rep]}, sc)
            for rep, v in visits.groupby("replication")]
    needed = {t.metric for t in targets.targets}
    per_rep = {m: np.array([METRICS[m](r) for r in reps]) for m in needed}
    rows = []
    for t in targets.targets:
        mean, _sd, lo, hi, n = mean_ci(per_rep[t.metric])
        rows.append(
            {
                "id": t.id,
                "metric": t.metric,
                "model_mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "replications": n,
                "target": t.describe(),
                "low": t.centre - t.scale if t.range is None else t.range[0],
                "high": t.centre + t.scale if t.range is None else t.range[1],
                "met": t.met(mean),
                "description": t.description,
                "source": t.source,
                "confidence": t.confidence,
            }
        )
    return pd.DataFrame(rows)
