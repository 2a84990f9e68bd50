"""Output analysis of the time series: MSER-5 warm-up, the transient table, the first-year trajectory,
and ``--warmup auto`` through a run and its run folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import iopsim.outputs.runfolder
from conftest import minimal_scenario_dict
from iopsim.analysis.kpis import replication_kpis
from iopsim.experiments.run import Plan, run_scenario
from iopsim.outputs.runfolder import save_run
from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import validate_raw
from iopsim.analysis.warmup import BATCH, monthly_trajectory, mser5, transient_table, warmup_days

# --------------------------------------------------------------------------- MSER-5


def mser_brute_force(series) -> int:
    """MSER-5 straight from the definition: batch means of 5, truncate d batches (d <= half),
    minimise sum((y - mean)^2) / (n - d)^2."""
    x = [v for v in series if math.isfinite(v)]
    nb = len(x) // 5
    if nb < 4:
        return 0
    y = [sum(x[5 * i : 5 * i + 5]) / 5 for i in range(nb)]
    best, best_d = math.inf, 0
    for d in range(nb // 2 + 1):
        rest = y[d:]
        m = sum(rest) / len(rest)
        value = sum((v - m) ** 2 for v in rest) / len(rest) ** 2
        if value < best - 1e-12 * max(1.0, abs(best) if math.isfinite(best) else 1.0):
            best, best_d = value, d
    return best_d * 5


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [23, 100, 333])
def test_mser5_matches_the_definition(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n) + np.where(np.arange(n) < n // 5, rng.uniform(1, 4), 0.0)
    x[rng.integers(0, n)] = np.nan  # non-finite values are dropped first
    assert mser5(x) == mser_brute_force(x), f"seed {seed}, n {n}: mser5 {mser5(x)} vs definition {mser_brute_force(x)}"


@pytest.mark.parametrize("shape", ["step", "ramp"])
@pytest.mark.parametrize("length", [100, 103, 150])
def test_mser5_finds_a_known_transient(shape, length):
    """An initial transient of known length, then stationary noise: the truncation lands near its end.

    MSER-5 occasionally over-truncates a noisy series (a known property of the method), so the claim
    is checked over 40 series: the median within one batch and >= 75 % within two batches.
    """
    found = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x = rng.normal(0.0, 1.0, 1000)
        x[:length] += 5.0 if shape == "step" else np.linspace(20.0, 0.0, length)
        found.append(mser5(x))
    found = np.array(found)
    assert abs(np.median(found) - length) <= BATCH, f"{shape} of {length}: median truncation {np.median(found)}"
    close = np.mean(np.abs(found - length) <= 2 * BATCH)
    assert close >= 0.75, f"{shape} of {length}: only {close:.0%} of truncations within 2 batches: {found.tolist()}"
    assert found.min() >= length - 2 * BATCH, f"{shape} of {length}: truncated well inside the transient: {found.min()}"


def test_mser5_stationary_series_is_not_truncated():
    rng = np.random.default_rng(0)
    assert mser5(rng.normal(10.0, 1.0, 1000)) == 0, "white noise (seed 0) should not be truncated"
    found = np.array([mser5(np.random.default_rng(s).normal(10.0, 1.0, 1000)) for s in range(40)])
    assert np.median(found) == 0 and np.mean(found == 0) >= 0.7, f"stationary series truncated too often: {found.tolist()}"
    assert mser5(np.full(200, 3.0)) == 0, "a constant series needs no warm-up"


def test_mser5_short_series_and_search_limit():
    assert mser5([5.0] * 19 + [0.0]) == 0, "fewer than 4 batches: no truncation"
    x = np.zeros(400)
    x[:300] = 10.0  # a 'transient' longer than half the series: the search stops at the half
    got = mser5(x + np.random.default_rng(1).normal(0, 0.1, 400))
    assert got <= 200, f"truncation {got} beyond the first half of the series"


# --------------------------------------------------------------------------- warmup_days


def synthetic_levels(days: int = 400, reps: int = 3, seed: int = 0) -> pd.DataFrame:
    """Stages: iop (waitlist transient 60 days, census transient 100 days), php (constant)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(reps):
        for d in range(days):
            rows.append(("iop", r, d, 4.0 + (6.0 if d < 60 else 0.0) + rng.normal(0, 0.5),
                         8.0 - (8.0 * (1 - d / 100) if d < 100 else 0.0) + rng.normal(0, 0.5)))
            rows.append(("php", r, d, 0.0, 2.0))
    df = pd.DataFrame(rows, columns=["stage", "replication", "day", "waitlist_mean", "census_mean"])
    df["waitlist_max"] = df["waitlist_mean"].round() + 1
    df["census_max"] = df["census_mean"].round() + 1
    return df


def test_warmup_days_takes_the_longest_transient_over_series():
    levels = synthetic_levels()
    got = warmup_days(levels)
    assert 90 <= got <= 110, f"census transient of 100 days (longest series): warm-up {got}"
    only_waitlist = levels.assign(census_mean=np.where(levels["stage"] == "iop", 8.0, 2.0))
    got_w = warmup_days(only_waitlist)
    assert 55 <= got_w <= 70, f"waitlist transient of 60 days: warm-up {got_w}"
    assert warmup_days(levels.iloc[0:0]) == 0, "empty levels table: no warm-up"
    flat = levels.assign(waitlist_mean=1.0, census_mean=2.0)
    assert warmup_days(flat) == 0, "constant series: no warm-up"


def test_warmup_days_uses_the_mean_across_replications():
    """One replication alone has a transient; averaged over the others it must still be found (and only
    the mean matters, not the order of rows)."""
    levels = synthetic_levels().sample(frac=1.0, random_state=3)
    assert warmup_days(levels) == warmup_days(synthetic_levels()), "row order changed the warm-up"
    means = synthetic_levels().groupby(["stage", "day"])[["waitlist_mean", "census_mean"]].mean()
    by_hand = max(mser5(means.loc["iop", c].to_numpy()) for c in ("waitlist_mean", "census_mean"))
    assert warmup_days(levels) == by_hand, f"warm-up {warmup_days(levels)} vs MSER-5 of the mean series {by_hand}"


# --------------------------------------------------------------------------- transient table


def tiny_levels() -> pd.DataFrame:
    """3 replications x 10 days of iop and intake; threshold 3 is reached on days 4 and 6 (exactly 3)."""
    wl_max = {
        0: [0, 1, 2, 2, 4, 5, 1, 0, 0, 0],  # first >= 3 on day 4
        1: [0, 0, 1, 2, 2, 2, 3, 3, 9, 0],  # first >= 3 on day 6 (equal counts)
        2: [0, 0, 0, 1, 1, 2, 2, 1, 0, 0],  # never
    }
    rows = []
    for r, values in wl_max.items():
        for d, v in enumerate(values):
            rows.append(("iop", r, d, v / 2.0, float(v), 5.0, 6.0))
            rows.append(("intake", r, d, 0.5, 1.0, 0.2, 1.0))
    return pd.DataFrame(rows, columns=["stage", "replication", "day", "waitlist_mean", "waitlist_max",
                                       "census_mean", "census_max"])


def test_transient_table_first_day_over_threshold_by_hand():
    table = transient_table(tiny_levels(), threshold=3.0).set_index("stage")
    assert set(table.index) == {"iop", "intake"}, f"stages: {list(table.index)}"
    iop = table.loc["iop"]
    firsts = np.array([4.0, 6.0])
    half = stats.t.ppf(0.975, 1) * firsts.std(ddof=1) / math.sqrt(2)
    assert iop["first_day_over_threshold_mean"] == pytest.approx(5.0), f"mean first day: {iop['first_day_over_threshold_mean']}"
    assert iop["first_day_over_threshold_ci_low"] == pytest.approx(5.0 - half), f"CI low {iop['first_day_over_threshold_ci_low']}"
    assert iop["first_day_over_threshold_ci_high"] == pytest.approx(5.0 + half), f"CI high {iop['first_day_over_threshold_ci_high']}"
    assert iop["share_replications_over_threshold"] == pytest.approx(2 / 3), f"share: {iop['share_replications_over_threshold']}"
    assert iop["threshold"] == 3.0
    assert iop["settles_day"] == 0, "10 days is too short for MSER-5: settles on day 0"
    intake = table.loc["intake"]
    assert intake["share_replications_over_threshold"] == 0.0, f"intake never reaches 3: {intake.to_dict()}"
    assert math.isnan(intake["first_day_over_threshold_mean"]), "no replication reached it: mean should be NaN"


def test_transient_table_threshold_reached_by_one_replication():
    table = transient_table(tiny_levels(), threshold=9.0).set_index("stage")
    iop = table.loc["iop"]
    assert iop["first_day_over_threshold_mean"] == 8.0, f"only replication 1 reaches 9, on day 8: {iop.to_dict()}"
    assert iop["share_replications_over_threshold"] == pytest.approx(1 / 3)
    assert math.isnan(iop["first_day_over_threshold_ci_low"]), "one value has no CI"


def test_transient_table_settles_day_is_mser5_of_the_mean_waitlist():
    levels = synthetic_levels()
    table = transient_table(levels, threshold=9.0).set_index("stage")
    mean = levels[levels["stage"] == "iop"].groupby("day")["waitlist_mean"].mean().to_numpy()
    assert table.loc["iop", "settles_day"] == mser5(mean), f"settles_day {table.loc['iop', 'settles_day']}"
    assert 55 <= table.loc["iop", "settles_day"] <= 70, f"the waitlist transient is 60 days: {table.loc['iop', 'settles_day']}"
    assert table.loc["php", "settles_day"] == 0, "a flat waitlist settles at once"


# --------------------------------------------------------------------------- monthly trajectory


def test_monthly_trajectory_matches_hand_computation():
    rows = []
    for r in range(3):
        for d in range(70):  # months of 365/12 days: 1 = days 0-30, 2 = days 31-60, 3 = days 61-69 here
            rows.append(("iop", r, d, float(d * (r + 1)), float(10 + r), 0.0, 0.0))
    levels = pd.DataFrame(rows, columns=["stage", "replication", "day", "waitlist_mean", "census_mean",
                                         "waitlist_max", "census_max"])
    got = monthly_trajectory(levels).set_index("month")
    assert list(got.index) == [1, 2, 3], f"months: {list(got.index)}"
    for month, days in ((1, range(0, 31)), (2, range(31, 61)), (3, range(61, 70))):
        per_rep = [sum(d * (r + 1) for d in days) / len(days) for r in range(3)]
        m = sum(per_rep) / 3
        sd = math.sqrt(sum((v - m) ** 2 for v in per_rep) / 2)
        half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        row = got.loc[month]
        assert row["waitlist_mean"] == pytest.approx(m, rel=1e-12), f"month {month}: mean waitlist {row['waitlist_mean']} vs {m}"
        assert row["waitlist_mean_ci_low"] == pytest.approx(m - half, rel=1e-9), f"month {month}: CI low"
        assert row["waitlist_mean_ci_high"] == pytest.approx(m + half, rel=1e-9), f"month {month}: CI high"
        assert row["census_mean"] == pytest.approx(11.0), f"month {month}: census mean {row['census_mean']}"
    assert list(monthly_trajectory(levels, months=2)["month"]) == [1, 2], "months=2 should keep only two months"
    assert monthly_trajectory(levels.iloc[0:0]).empty, "no levels: no trajectory"


# --------------------------------------------------------------------------- --warmup auto


def test_warmup_auto_through_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(iopsim.outputs.runfolder, "run_figures", lambda *a, **k: None)  # figures are tested with the report
    d = minimal_scenario_dict()
    d.update(name="warm", horizon_days=200)
    d["stages"]["iop"]["los_days"] = {"dist": "exponential", "mean": 8.0}  # opens empty: census climbs for weeks
    sc = validate_raw(d, "test")
    plan = Plan(replications=3, seed=21, jobs=1, warmup="auto")
    out = run_scenario(sc, plan)
    folder = save_run(out, tmp_path / "run", report=False)
    man = json.loads((folder / "manifest.json").read_text())
    w = out.warmup
    assert man["warmup_days"] == w, f"manifest warm-up {man['warmup_days']} vs used {w}"
    assert man["warmup_requested"] == "auto", f"manifest warmup_requested: {man['warmup_requested']!r}"
    assert "MSER-5" in man["notes"].get("warmup_method", ""), f"warm-up method not recorded: {man['notes']}"
    levels = pd.read_parquet(folder / "levels.parquet")
    assert w == min(warmup_days(levels), sc.horizon_days // 2), f"warm-up {w} is not MSER-5 of the written levels"
    assert 0 < w < sc.horizon_days // 2, f"a site opening empty should need a warm-up, got {w}"
    csv = pd.read_csv(folder / "replications.csv")
    for r in range(3):
        want = replication_kpis(run_replication(sc, r, 21).records, sc, w)
        got = out.per_replication.set_index("replication").loc[r]
        got_csv = csv.set_index("replication").loc[r]
        for k, v in want.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(got[k]) and math.isnan(got_csv[k]), f"rep {r}: {k} should be NaN"
            else:
                assert got[k] == v, f"rep {r}: KPI {k} = {got[k]} but replication_kpis with warm-up {w} gives {v}"
                assert got_csv[k] == pytest.approx(v, rel=1e-12, abs=1e-12), f"rep {r}: replications.csv {k}"
    no_warmup = replication_kpis(run_replication(sc, 0, 21).records, sc, 0)
    assert out.per_replication.set_index("replication").loc[0, "referrals"] < no_warmup["referrals"], \
        "KPIs were not computed over the window after the warm-up"
