"""Validation of the stage queue against queueing theory.

* M/M/c: one stage (IOP) fed by Poisson referrals, exponential stays, ``c``
  places, no exits, no patience, no relapse, no intake.  Mean wait and the
  time-average waitlist must match Erlang C within the 95 % confidence interval
  across replications, and the interval must be narrow enough to mean something.
* M/M/inf: capacity omitted; nobody ever waits and the mean census is lambda/mu.
* Little's law: the bookkeeping identity (census integral == summed stays,
  waitlist integral == summed waits, clipped to the run) in every replication,
  and the long-run L = lambda W with a tolerance.

Helpers live in this file on purpose (no dependency on conftest.py).
"""

from __future__ import annotations

import copy
import functools
import math
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from iopsim.experiments.replications import run_replication, run_replications
from iopsim.schema.scenario import resolve_raw, validate_raw
from iopsim.analysis.stats import mean_ci

BASELINE = Path(__file__).resolve().parent.parent / "scenarios" / "baseline.yaml"
MU = 1.0  # service rate: mean stay of one day (time unit = day)


def _preload_forkserver() -> None:
    """Make worker start-up cheap: the forkserver imports the simulator once.

    Only an optimisation; it has no effect if the forkserver already runs.
    """
    try:
        mp.get_context("forkserver").set_forkserver_preload(["iopsim.experiments.replications"])
    except Exception:  # pragma: no cover - platform without forkserver
        pass


# --------------------------------------------------------------------------- theory


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load a = lambda/mu < c."""
    rho = a / c
    assert rho < 1, "Erlang C needs a stable queue"
    head = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / math.factorial(c) / (1.0 - rho)
    return tail / (head + tail)


def mmc_theory(c: int, lam: float, mu: float) -> tuple[float, float]:
    """(Wq, Lq) of M/M/c: Wq = C(c, a) / (c mu - lambda), Lq = lambda Wq."""
    wq = erlang_c(c, lam / mu) / (c * mu - lam)
    return wq, lam * wq


def test_erlang_c_formula_known_values():
    # M/M/1: C = rho.  M/M/2 at a = 1: C = 1/3 (textbook).  M/M/2, a = 1.9: 36.1/39.
    assert erlang_c(1, 0.5) == pytest.approx(0.5, abs=1e-12), "Erlang C for c=1 must equal rho"
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0, abs=1e-12), "Erlang C(2, 1) must be 1/3"
    assert erlang_c(2, 1.9) == pytest.approx(36.1 / 39.0, abs=1e-12), "Erlang C(2, 1.9) must be 36.1/39"
    wq, lq = mmc_theory(1, 0.5, 1.0)
    assert (wq, lq) == pytest.approx((1.0, 0.5)), "M/M/1 at rho=0.5: Wq = rho/(mu-lambda) = 1, Lq = 0.5"


# --------------------------------------------------------------------------- scenarios


def mmc_scenario(c: int | None, lam: float, horizon: int, warmup: int, seed: int, start_waitlist: int = 0):
    """Only IOP, one source placing everyone in IOP, flat Poisson referrals, Exp(mu) stays."""
    iop: dict = {"los_days": {"dist": "exponential", "mean": 1.0 / MU}}
    if c is not None:
        iop["capacity"] = c
    raw = {
        "name": f"mmc-c{c}-lam{lam:g}",
        "seed": seed,
        "horizon_days": horizon,
        "warmup_days": warmup,
        "referrals": {
            "referrals_per_week": lam * 7.0,  # flat weekday profile and months by default
            "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}},
        },
        "stages": {"iop": iop},
    }
    if c is not None:
        # Start near the stationary mean (all places busy, ~Lq waiting) so that the
        # warm-up only has to remove a small initialisation bias.
        raw["start_state"] = {"stages": {"iop": {"census": c, "waitlist": start_waitlist}}}
    return validate_raw(raw, "test")


# (c, rho, horizon, warm-up, replications, seed).  Sizes chosen so that the 95 % CI
# half-width is ~7-12 % of the theoretical value (the relaxation time of the queue
# at rho = 0.95 with c = 2 is ~1/(c mu (1 - sqrt(rho))^2) ~ 800 days, so that case
# needs the long run and 16 replications); about 520k simulated patients in total.
# Seeds are fixed, so the outcome is deterministic.  Each comparison is a 95 % test:
# even for a correct model about 1 seed in 20 fails it, so if a change to the random
# streams makes one fail, check a few other seeds before suspecting the model.
MMC_CASES = [
    (1, 0.50, 6_000, 300, 10, 101),
    (3, 0.80, 5_000, 300, 10, 102),
    (2, 0.95, 15_000, 1_000, 16, 103),
]


@functools.lru_cache(maxsize=None)
def _mmc_run(c, rho, horizon, warmup, n, seed):
    lam = rho * c * MU
    _, lq = mmc_theory(c, lam, MU)
    scenario = mmc_scenario(c, lam, horizon, warmup, seed, start_waitlist=int(round(lq)))
    _preload_forkserver()
    results = run_replications(scenario, n, jobs=2)
    return lam, results


def _ids(case):
    return f"c{case[0]}-rho{case[1]}"


@pytest.mark.parametrize("case", MMC_CASES, ids=[_ids(c) for c in MMC_CASES])
@pytest.mark.parametrize(
    "kpi,which",
    [("iop_admitted_wait_mean_days", 0), ("iop_waitlist_mean", 1)],
    ids=["Wq", "Lq"],
)
def test_mmc_matches_erlang_c(case, kpi, which):
    c, rho, horizon, warmup, n, seed = case
    lam, results = _mmc_run(*case)
    theory = mmc_theory(c, lam, MU)[which]
    values = [r.kpis[kpi] for r in results]
    mean, _sd, lo, hi, k = mean_ci(values, 0.95)
    assert k == n, f"{kpi}: expected {n} finite replication values, got {k}: {values}"
    half = (hi - lo) / 2.0
    assert half < 0.15 * theory, (
        f"M/M/{c} rho={rho}: {kpi} CI half-width {half:.4g} is not < 15 % of theory {theory:.4g}; "
        "the check would be vacuous"
    )
    assert lo <= theory <= hi, (
        f"M/M/{c} rho={rho}: {kpi} theory {theory:.4g} outside the 95 % CI [{lo:.4g}, {hi:.4g}] "
        f"(mean {mean:.4g} over {n} replications)"
    )


@pytest.mark.parametrize("case", MMC_CASES, ids=[_ids(c) for c in MMC_CASES])
def test_mmc_sanity_utilisation_and_no_exits(case):
    """Server utilisation is rho, and the stage has only completions and queue."""
    c, rho, *_ = case
    lam, results = _mmc_run(*case)
    occ = [r.kpis["iop_occupancy"] for r in results]
    mean, _sd, lo, hi, _ = mean_ci(occ, 0.999)
    # Occupancy (busy places / c) has a much smaller variance than the queue.
    assert (hi - lo) / 2 < 0.06 * rho, f"M/M/{c}: occupancy CI [{lo:.4f}, {hi:.4f}] too wide"
    assert lo <= rho <= hi, f"M/M/{c}: utilisation rho = {rho} outside the 99.9 % CI [{lo:.4f}, {hi:.4f}] of occupancy"
    for r in results:
        outcomes = set(r.records["visits"]["outcome"].dropna().unique())
        assert outcomes <= {"completed", "in_system"}, f"no exits/patience configured, got outcomes {outcomes}"
        assert r.kpis["iop_census_max"] <= c, f"census above capacity {c}: {r.kpis['iop_census_max']}"


def test_mm_infinity_no_waits_and_census_is_offered_load():
    lam, mean_los = 4.0, 2.5  # offered load lambda/mu = 10
    raw = {
        "name": "mm-inf",
        "seed": 7,
        "horizon_days": 1_500,
        "warmup_days": 40,
        "referrals": {"referrals_per_week": lam * 7.0, "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {"iop": {"los_days": {"dist": "exponential", "mean": mean_los}}},  # capacity omitted
    }
    scenario = validate_raw(raw, "test")
    assert scenario.stages.iop.capacity is None
    _preload_forkserver()
    results = run_replications(scenario, 6, jobs=2)
    for r in results:
        v = r.records["visits"]
        assert len(v) > 1000, f"replication {r.replication}: only {len(v)} visits"
        t_join = v["t_join"].to_numpy(float)
        t_admit = v["t_admit"].to_numpy(float)
        assert not np.isnan(t_admit).any(), "with unlimited capacity everyone must be admitted"
        assert np.array_equal(t_join, t_admit), "with unlimited capacity every wait must be exactly 0"
        assert r.kpis["iop_admitted_wait_mean_days"] == 0.0, f"wait mean {r.kpis['iop_admitted_wait_mean_days']}"
        assert r.kpis["iop_waitlist_mean"] == 0.0, f"waitlist mean {r.kpis['iop_waitlist_mean']}"
        assert r.kpis["iop_waitlist_max"] == 0.0, f"waitlist max {r.kpis['iop_waitlist_max']}"
    census = [r.kpis["iop_census_mean"] for r in results]
    mean, _sd, lo, hi, _ = mean_ci(census)
    theory = lam * mean_los
    assert (hi - lo) / 2 < 0.05 * theory, f"census CI [{lo:.3f}, {hi:.3f}] too wide to test"
    assert lo <= theory <= hi, f"M/M/inf mean census: lambda/mu = {theory} outside CI [{lo:.4f}, {hi:.4f}]"


# --------------------------------------------------------------------------- Little's law


def _baseline_raw() -> dict:
    return resolve_raw(BASELINE)


def _stressed_raw() -> dict:
    """Baseline with a start state and tiny capacities: queues, reneging, overflow."""
    raw = copy.deepcopy(_baseline_raw())
    raw["name"] = "stressed"
    caps = {"residential": 2, "php": 1, "iop": 2, "aftercare": 2}
    for stage, cap in caps.items():
        cfg = raw["stages"][stage]
        if cfg.get("tracks"):  # a group-therapy IOP: capacity = groups x max_group_size
            for track in cfg["tracks"].values():
                track.update(groups=1, max_group_size=1, min_group_size=1)
        else:
            cfg["capacity"] = cap
    raw["referrals"]["referrals_per_week"] = 15.0
    raw["start_state"] = {
        "intake_waitlist": 6,
        "stages": {
            "residential": {"census": 2, "waitlist": 3},
            "php": {"census": 1, "waitlist": 2},
            "iop": {"census": 2, "waitlist": 4},
            "aftercare": {"census": 1, "waitlist": 1},
        },
    }
    return raw


def _integral_identity(records, horizon: float):
    """Per stage: (census integral, summed clipped stays, waitlist integral, summed clipped waits)."""
    v, levels = records["visits"], records["levels"]
    out = {}
    for stage in levels["stage"].unique():
        lv = levels[levels["stage"] == stage]
        vs = v[v["stage"] == stage]
        t_join = vs["t_join"].to_numpy(float)
        t_admit = vs["t_admit"].to_numpy(float)
        t_leave = vs["t_leave"].to_numpy(float)
        admitted = ~np.isnan(t_admit)
        stay_end = np.where(np.isnan(t_leave), horizon, t_leave)
        stays = np.clip(stay_end[admitted], 0, horizon) - np.clip(t_admit[admitted], 0, horizon)
        wait_end = np.where(admitted, t_admit, np.where(np.isnan(t_leave), horizon, t_leave))
        waits = np.clip(wait_end, 0, horizon) - np.clip(t_join, 0, horizon)
        out[str(stage)] = (
            float(lv["census_mean"].sum()),
            float(stays.sum()),
            float(lv["waitlist_mean"].sum()),
            float(waits.sum()),
        )
    return out


@pytest.mark.parametrize("variant", ["baseline", "stressed"])
def test_little_identity_every_replication(variant):
    raw = _baseline_raw() if variant == "baseline" else _stressed_raw()
    scenario = validate_raw(raw, "test")
    horizon = float(scenario.horizon_days)
    expected_stages = (["intake"] if scenario.intake else []) + list(scenario.stages.enabled())
    for rep in range(3):
        res = run_replication(scenario, rep)
        ident = _integral_identity(res.records, horizon)
        assert sorted(ident) == sorted(expected_stages), f"level series for {sorted(ident)}"
        for stage, (census_area, stays, wl_area, waits) in ident.items():
            assert census_area > 0, f"{variant} rep {rep} {stage}: nobody was ever in care"
            assert census_area == pytest.approx(stays, rel=1e-6, abs=1e-6), (
                f"{variant} rep {rep} {stage}: census integral {census_area!r} != summed stays {stays!r}"
            )
            assert wl_area == pytest.approx(waits, rel=1e-6, abs=1e-6), (
                f"{variant} rep {rep} {stage}: waitlist integral {wl_area!r} != summed waits {waits!r}"
            )
        if variant == "stressed":
            total_wait = sum(x[2] for x in ident.values())
            assert total_wait > 100, f"stressed variant should queue heavily (waitlist area {total_wait})"


def test_little_law_long_run_baseline():
    """L = lambda W per stage, from the KPIs of a long baseline run after a year's warm-up.

    W is the KPI mean stay of stays that ended, so long stays still running at the end
    are missing from it: a small downward bias (~4-5 % for aftercare, whose mean stay is
    ~1/11 of the window).  Hence the 8 % tolerance.
    """
    raw = _baseline_raw()
    raw["horizon_days"] = 1460
    raw["warmup_days"] = 365
    scenario = validate_raw(raw, "test")
    window = scenario.horizon_days - scenario.warmup_days
    _preload_forkserver()
    results = run_replications(scenario, 6, jobs=2)
    stages = (["intake"] if scenario.intake else []) + list(scenario.stages.enabled())
    for stage in stages:
        L = np.mean([r.kpis[f"{stage}_census_mean"] for r in results])
        lam = np.mean([r.kpis[f"{stage}_admissions"] for r in results]) / window
        W = np.mean([r.kpis[f"{stage}_stay_mean_days"] for r in results])
        assert L > 0, f"{stage}: empty stage, nothing to test"
        assert lam * W == pytest.approx(L, rel=0.08), (
            f"{stage}: L = {L:.4f} but lambda W = {lam:.4f} x {W:.4f} = {lam * W:.4f}"
        )
    # Waiting line: L_q = lambda_join * W_q with every wait (reneged ones included).
    w0, horizon = float(scenario.warmup_days), float(scenario.horizon_days)
    for stage in stages:
        Lq, lam_w = [], []
        for r in results:
            v = r.records["visits"]
            v = v[v["stage"] == stage]
            t_join = v["t_join"].to_numpy(float)
            t_admit = v["t_admit"].to_numpy(float)
            t_leave = v["t_leave"].to_numpy(float)
            end = np.where(~np.isnan(t_admit), t_admit, np.where(np.isnan(t_leave), horizon, t_leave))
            joined = t_join >= w0
            lam_w.append(np.count_nonzero(joined) / window * (end[joined] - t_join[joined]).mean())
            Lq.append(r.kpis[f"{stage}_waitlist_mean"])
        if np.mean(Lq) < 0.05:
            continue  # (almost) no queue at this stage
        assert np.mean(lam_w) == pytest.approx(np.mean(Lq), rel=0.08), (
            f"{stage}: waitlist mean {np.mean(Lq):.4f} but lambda Wq = {np.mean(lam_w):.4f}"
        )

