"""Comparing scenarios with common random numbers (CRN): ``iopsim.analysis.compare`` and ``simulate``.

* identical scenarios give paired differences of exactly zero, replication by replication;
* CRN reduces the variance of the paired differences compared with independent seeds;
* Bonferroni-adjusted intervals with more than two scenarios (checked by hand);
* the sequential ``--precision`` rule, driven by a fake replication with known variance;
* the Nelson-Matejcik selection (required replications by hand; picks the best);
* ``differing_parameters``;
* CLI errors of ``iopsim compare``.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from iopsim import cli
import iopsim.experiments.run
import iopsim.outputs.runfolder
import iopsim.experiments.replications
from conftest import minimal_scenario_dict
from iopsim.analysis.compare import (
    differing_parameters,
    nelson_matejcik,
    nm_required_replications,
    paired_differences,
    relative_half_width,
)
from iopsim.errors import IopsimError
from iopsim.experiments.run import Plan, simulate
from iopsim.experiments.replications import ReplicationResult, kpi_table
from iopsim.schema.scenario import load_scenario, validate_raw

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"
EVENING = REPO_ROOT / "scenarios" / "evening.yaml"
WAIT = "iop_admitted_wait_mean_days"


# --------------------------------------------------------------------------- helpers


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def assert_one_error_line(result, *fragments: str) -> None:
    out, err = result.stdout, result.stderr
    assert result.exit_code == 2, f"expected exit code 2, got {result.exit_code}; stderr={err!r} stdout={out!r}"
    assert "Traceback" not in out + err, f"a traceback reached the user: {out + err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr should be exactly one line, got {len(lines)}: {err!r}"
    assert lines[0].startswith("error:") and lines[0][6:].strip(), f"expected 'error: <message>', got {lines[0]!r}"
    for fragment in fragments:
        assert fragment in lines[0], f"expected {fragment!r} in the error line {lines[0]!r}"


def slot_scenario(name: str = "slots", capacity: int = 10, horizon: int = 150, los_mean: float = 8.0,
                  per_week: float = 7.0):
    """A one-stage IOP slot scenario (no intake); busy enough that people wait."""
    d = minimal_scenario_dict()
    d.update(name=name, horizon_days=horizon)
    d["referrals"]["referrals_per_week"] = per_week
    d["stages"]["iop"]["capacity"] = capacity
    d["stages"]["iop"]["los_days"] = {"dist": "exponential", "mean": los_mean}
    return validate_raw(d, "test")


def no_figures(monkeypatch) -> None:
    """Figures are tested in test_report.py; here they only cost time."""
    monkeypatch.setattr(iopsim.outputs.runfolder, "run_figures", lambda *a, **k: None)
    monkeypatch.setattr(iopsim.outputs.runfolder, "comparison_figures", lambda *a, **k: [])


def assert_tables_identical(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    assert list(a.columns) == list(b.columns), f"{what}: KPI columns differ: {set(a.columns) ^ set(b.columns)}"
    assert len(a) == len(b) and len(a) > 0, f"{what}: {len(a)} vs {len(b)} replications"
    for col in a.columns:
        x, y = a[col].to_numpy(dtype=float), b[col].to_numpy(dtype=float)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        assert same.all(), f"{what}: KPI {col} differs between identical scenarios: {x} vs {y}"


def assert_all_differences_zero(diffs: pd.DataFrame, base: str, what: str) -> None:
    others = diffs[diffs["scenario"] != base]
    assert len(others), f"{what}: no non-baseline rows in the differences"
    for _, r in others.iterrows():
        if r["n"] == 0 or (isinstance(r["mean"], float) and math.isnan(r["mean"])):
            # The KPI is undefined in every replication (e.g. no cost data): no difference to show.
            assert math.isnan(r["diff"]), f"{what}: {r['kpi']} undefined but diff={r['diff']}"
        else:
            assert r["diff"] == 0.0, f"{what}: paired difference of {r['kpi']} is {r['diff']!r}, expected exactly 0.0"
        assert not bool(r["significant"]), f"{what}: {r['kpi']} flagged significant with identical scenarios"
    assert (others["diff"] == 0.0).sum() >= 10, f"{what}: too few finite KPI differences to be a meaningful check"


# --------------------------------------------------------------------------- zero difference


def test_same_file_twice_gives_zero_differences(tmp_scenario, tmp_path, monkeypatch):
    """`iopsim compare X X`: the second copy is renamed, and every paired difference is exactly 0."""
    no_figures(monkeypatch)
    d = minimal_scenario_dict()
    d.update(name="tiny", horizon_days=80)
    path = tmp_scenario(d, name="tiny.yaml")
    out = tmp_path / "cmp"
    result = invoke("compare", path, path, "--jobs", "1", "-n", "3", "--no-report", "--out", out)
    assert result.exit_code == 0, f"compare of a file with itself failed: {result.output!r} {result.exception!r}"
    a = pd.read_csv(out / "scenarios" / "tiny" / "replications.csv")
    b = pd.read_csv(out / "scenarios" / "tiny-2" / "replications.csv")
    assert_tables_identical(a, b, "same file twice")
    diffs = pd.read_csv(out / "differences.csv")
    assert set(diffs["scenario"]) == {"tiny", "tiny-2"}, f"unexpected scenarios in differences: {set(diffs['scenario'])}"
    assert_all_differences_zero(diffs, "tiny", "same file twice")
    params = pd.read_csv(out / "parameters_differ.csv")
    assert len(params) == 0, f"identical scenarios reported differing parameters: {params}"


def test_baseline_vs_renamed_copy_gives_zero_differences(tmp_path):
    """The scenario name does not feed the random streams: a renamed copy sees the same numbers."""
    text = BASELINE.read_text(encoding="utf-8")
    assert "\nname: baseline\n" in text, "baseline.yaml no longer starts with 'name: baseline'; update the test"
    copy = tmp_path / "copy.yaml"
    copy.write_text(text.replace("\nname: baseline\n", "\nname: baseline-copy\n"), encoding="utf-8")
    base = load_scenario(BASELINE, ["horizon_days=120"])
    other = load_scenario(copy, ["horizon_days=120"])
    assert other.name == "baseline-copy"
    results = simulate({"baseline": base, "baseline-copy": other}, Plan(replications=3, seed=7))
    per_rep = {n: kpi_table(rs) for n, rs in results.items()}
    assert_tables_identical(per_rep["baseline"], per_rep["baseline-copy"], "baseline vs renamed copy")
    diffs = paired_differences(per_rep)
    assert_all_differences_zero(diffs, "baseline", "baseline vs renamed copy")
    resolved = {n: sc.model_dump(mode="json", by_alias=True, exclude_none=True) for n, sc in
                {"baseline": base, "baseline-copy": other}.items()}
    assert differing_parameters(resolved).empty, "a renamed copy should differ in no parameter (name is excluded)"


# --------------------------------------------------------------------------- CRN variance reduction


def test_crn_reduces_variance_of_paired_differences():
    """Capacity 10 vs 11: paired differences under CRN vary far less than with independent seeds."""
    a, b = slot_scenario("a", capacity=10), slot_scenario("b", capacity=11)
    reps = 30
    crn = simulate({"a": a, "b": b}, Plan(replications=reps, seed=1))
    indep_b = simulate({"b": b}, Plan(replications=reps, seed=1001))["b"]
    wa = kpi_table(crn["a"]).set_index("replication")[WAIT]
    wb = kpi_table(crn["b"]).set_index("replication")[WAIT]
    wbi = kpi_table(indep_b).set_index("replication")[WAIT]
    assert wa.notna().all() and wb.notna().all() and wbi.notna().all(), "mean wait undefined in some replication"
    assert wa.mean() > 0.3, f"the test case should make people wait (mean wait {wa.mean():.3f} days)"
    var_crn = float(np.var(wb - wa, ddof=1))
    var_ind = float(np.var(wbi - wa, ddof=1))
    assert var_ind > 0, "independent differences have zero variance: the seeds are not independent"
    ratio = var_crn / var_ind
    assert ratio < 0.5, f"CRN should at least halve the variance of the differences: ratio {ratio:.3f} ({var_crn:.3f} vs {var_ind:.3f})"
    # The CI of the CRN difference is narrower too.
    d_crn = paired_differences({"a": kpi_table(crn["a"]), "b": kpi_table(crn["b"])}, [WAIT]).set_index("scenario").loc["b"]
    d_ind = paired_differences({"a": kpi_table(crn["a"]), "b": kpi_table(indep_b)}, [WAIT]).set_index("scenario").loc["b"]
    w_crn = d_crn["diff_ci_high"] - d_crn["diff_ci_low"]
    w_ind = d_ind["diff_ci_high"] - d_ind["diff_ci_low"]
    assert w_crn < 0.75 * w_ind, f"CRN CI width {w_crn:.3f} not clearly narrower than independent {w_ind:.3f}"
    # More capacity cannot make people wait longer on average with CRN (sanity of the direction).
    assert d_crn["diff"] < 0, f"capacity 11 vs 10: expected a shorter mean wait, got diff {d_crn['diff']:.3f}"


# --------------------------------------------------------------------------- Bonferroni


def _synthetic_tables(n: int = 12, seed: int = 3) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    common = rng.normal(50.0, 5.0, n)
    reps = np.arange(n)
    return {
        "A": pd.DataFrame({"replication": reps, "x": common + rng.normal(0, 1, n)}),
        "B": pd.DataFrame({"replication": reps, "x": common + 2.0 + rng.normal(0, 1, n)}),
        "C": pd.DataFrame({"replication": reps, "x": common - 0.3 + rng.normal(0, 1, n)}),
    }


def _by_hand(base: np.ndarray, other: np.ndarray, comparisons: int) -> tuple[float, float, float]:
    d = other - base
    n = d.size
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    q = stats.t.ppf(1.0 - 0.05 / comparisons / 2.0, n - 1)
    return mean, mean - q * sd / math.sqrt(n), mean + q * sd / math.sqrt(n)


def test_bonferroni_widens_intervals_with_three_scenarios():
    t = _synthetic_tables()
    two = paired_differences({"A": t["A"], "B": t["B"]}).set_index("scenario")
    three = paired_differences(t).set_index("scenario")
    w2 = two.loc["B", "diff_ci_high"] - two.loc["B", "diff_ci_low"]
    w3 = three.loc["B", "diff_ci_high"] - three.loc["B", "diff_ci_low"]
    assert w3 > w2, f"the 3-scenario (Bonferroni) CI of B-A should be wider: {w3} vs {w2}"
    q2, q3 = stats.t.ppf(0.975, 11), stats.t.ppf(1 - 0.0125, 11)
    assert w3 / w2 == pytest.approx(q3 / q2, rel=1e-12), f"width ratio {w3 / w2} should be the t-quantile ratio {q3 / q2}"
    assert two.loc["B", "diff"] == pytest.approx(three.loc["B", "diff"], abs=1e-12), "the point estimate must not change"


@pytest.mark.parametrize("k", [2, 3])
def test_bonferroni_intervals_match_hand_computation(k):
    t = _synthetic_tables()
    names = ["A", "B", "C"][:k]
    diffs = paired_differences({n: t[n] for n in names}).set_index("scenario")
    a = t["A"]["x"].to_numpy()
    for n in names[1:]:
        mean, lo, hi = _by_hand(a, t[n]["x"].to_numpy(), comparisons=k - 1)
        r = diffs.loc[n]
        assert r["diff"] == pytest.approx(mean, rel=1e-12), f"{n}: diff {r['diff']} vs hand {mean}"
        assert r["diff_ci_low"] == pytest.approx(lo, rel=1e-10), f"{n}: CI low {r['diff_ci_low']} vs hand {lo} (k={k})"
        assert r["diff_ci_high"] == pytest.approx(hi, rel=1e-10), f"{n}: CI high {r['diff_ci_high']} vs hand {hi} (k={k})"
        assert bool(r["significant"]) == (lo > 0 or hi < 0), f"{n}: 'significant' disagrees with the interval [{lo}, {hi}]"
    # The baseline row carries no difference.
    assert diffs.loc["A", "diff"] == 0.0 and not bool(diffs.loc["A", "significant"]), "baseline row should be diff 0"


def test_paired_differences_pair_on_replication_number():
    """Rows are matched by replication, not by position in the table."""
    t = _synthetic_tables()
    shuffled = t["B"].sample(frac=1.0, random_state=1).reset_index(drop=True)
    a = paired_differences({"A": t["A"], "B": t["B"]}).set_index("scenario").loc["B"]
    b = paired_differences({"A": t["A"], "B": shuffled}).set_index("scenario").loc["B"]
    for col in ("diff", "diff_ci_low", "diff_ci_high"):
        assert a[col] == pytest.approx(b[col], rel=1e-12), f"{col} changed when B's rows were shuffled: {a[col]} vs {b[col]}"


# --------------------------------------------------------------------------- precision rule


KPI = "cost_per_completed_program"


def _noise(seed: int, replication: int, name: str) -> float:
    """Standard normal, fixed by (seed, replication, scenario name): independent across scenarios."""
    return float(np.random.default_rng([seed, replication, zlib.crc32(name.encode())]).standard_normal())


def fake_replications(monkeypatch, params: dict[str, tuple[float, float]]):
    """Replace the model with KPI = mu + sigma * z(seed, replication) per scenario name (known variance)."""
    calls: list[tuple[str, int]] = []

    def fake(scenario, replication, seed=None):
        mu, sigma = params[scenario.name]
        calls.append((scenario.name, replication))
        return ReplicationResult(replication, {}, {KPI: mu + sigma * _noise(seed, replication, scenario.name)})

    monkeypatch.setattr(iopsim.experiments.replications, "run_replication", fake)
    return calls


def expected_stop(values: dict[str, np.ndarray], first: int, batch: int, target: float, cap: int) -> int:
    """Independent statement of the rule: the first batch boundary where every relative half-width <= target."""
    n = first
    while n < cap:
        ok = True
        for v in values.values():
            x = v[:n]
            m = x.mean()
            half = stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
            ok &= m != 0 and half / abs(m) <= target
        if ok:
            return n
        n = min(n + batch, cap)
    return cap


@pytest.mark.parametrize(
    "params,target,first",
    [
        ({"one": (100.0, 20.0)}, 0.10, 5),
        ({"one": (100.0, 20.0)}, 0.05, 4),
        ({"low": (100.0, 5.0), "high": (100.0, 25.0)}, 0.08, 6),  # the noisier scenario decides
    ],
)
def test_precision_rule_stops_at_the_first_boundary_reaching_the_target(monkeypatch, params, target, first):
    calls = fake_replications(monkeypatch, params)
    scenarios = {n: slot_scenario(n) for n in params}
    cap = 400
    plan = Plan(replications=first, seed=11, jobs=1, precision=target, kpi=KPI, max_replications=cap)
    results = simulate(scenarios, plan)
    used = len(results[next(iter(results))])
    assert all(len(rs) == used for rs in results.values()), "scenarios got different numbers of replications"
    for n, rs in results.items():
        assert [r.replication for r in rs] == list(range(used)), f"{n}: replications not 0..{used - 1}"
    assert sorted(calls) == sorted((n, r) for n in params for r in range(used)), "some replication ran twice or not at all"
    all_values = {n: np.array([mu + s * _noise(11, r, n) for r in range(cap)]) for n, (mu, s) in params.items()}
    batch = max(plan.jobs, 2)
    want = expected_stop(all_values, first, batch, target, cap)
    assert want < cap, "test case should be reachable"
    # Known variance: the needed n is near (z * sigma / (target * mu))^2 for the noisiest scenario.
    rough = max((1.96 * s / (target * mu)) ** 2 for mu, s in params.values())
    assert 0.4 * rough <= want <= 2.5 * rough, f"hand rule stops at {want}, far from the theoretical ~{rough:.0f}"
    assert used >= want, f"stopped at {used} replications, before the target was reached at {want}"
    assert used <= want + batch, f"stopped at {used} replications, more than one batch after {want}"
    assert plan.notes.get("replications_used") == used, f"notes record {plan.notes.get('replications_used')} not {used}"
    for n, rs in results.items():
        rhw = relative_half_width(np.array([r.kpis[KPI] for r in rs]))
        assert rhw <= target, f"{n}: relative half-width {rhw:.4f} at the stop exceeds the target {target}"


def test_precision_rule_stops_at_max_replications_when_unreachable(monkeypatch):
    """Mean zero: the relative half-width never gets small; the rule must stop at the cap exactly."""
    fake_replications(monkeypatch, {"one": (0.0, 1.0)})
    plan = Plan(replications=4, seed=5, jobs=1, precision=0.01, kpi=KPI, max_replications=11)
    results = simulate({"one": slot_scenario("one")}, plan)
    assert len(results["one"]) == 11, f"expected to stop at max_replications=11, got {len(results['one'])}"
    assert plan.notes.get("replications_used") == 11, f"notes: {plan.notes}"


def test_precision_rule_on_a_real_scenario(tmp_path):
    """End to end on a tiny model: at the stop the target holds and one batch earlier it did not."""
    sc = slot_scenario("real", capacity=10, horizon=60)
    plan = Plan(replications=3, seed=2, jobs=1, precision=0.08, kpi="iop_census_mean", max_replications=60)
    results = simulate({"real": sc}, plan)["real"]
    v = np.array([r.kpis["iop_census_mean"] for r in results])
    n = len(v)
    assert 5 <= n < 60, f"expected the target to be reachable within 60 replications (after a few batches), used {n}"
    assert relative_half_width(v) <= 0.08, f"stopped at {n} with relative half-width {relative_half_width(v):.4f}"
    if n > 3:
        assert relative_half_width(v[: n - 2]) > 0.08, f"the target was already met at {n - 2} replications"


# --------------------------------------------------------------------------- Nelson-Matejcik


def _nm_hand(first: dict[str, np.ndarray], delta: float, alpha: float) -> int:
    names = list(first)
    k = len(names)
    n0 = min(len(v) for v in first.values())
    q = stats.t.ppf(1.0 - alpha / (k - 1), n0 - 1)
    s2 = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            d = [first[names[i]][r] - first[names[j]][r] for r in range(n0)]
            m = sum(d) / n0
            s2 = max(s2, sum((x - m) ** 2 for x in d) / (n0 - 1))
    return max(n0, math.ceil((q * math.sqrt(s2) / delta) ** 2))


def _nm_data(n: int = 200, seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    common = rng.normal(0.0, 3.0, n)  # CRN: a shared component per replication
    return {
        "a": 10.0 + common + rng.normal(0, 1.0, n),
        "b": 8.0 + common + rng.normal(0, 1.0, n),
        "c": 10.5 + common + rng.normal(0, 1.5, n),
    }


@pytest.mark.parametrize("delta,alpha", [(0.5, 0.05), (0.2, 0.10), (5.0, 0.05)])
def test_nm_required_replications_matches_formula(delta, alpha):
    data = {k: v[:10] for k, v in _nm_data().items()}
    want = _nm_hand(data, delta, alpha)
    got = nm_required_replications(data, delta, alpha)
    assert got == want, f"N for delta={delta}, alpha={alpha}: got {got}, by hand {want}"
    if delta == 5.0:
        assert got == 10, f"a large indifference zone should need no more than n0=10, got {got}"


def test_nm_required_replications_uses_the_shortest_first_stage():
    data = _nm_data()
    uneven = {"a": data["a"][:12], "b": data["b"][:10], "c": data["c"][:15]}
    trimmed = {k: v[:10] for k, v in uneven.items()}
    assert nm_required_replications(uneven, 0.5, 0.05) == _nm_hand(trimmed, 0.5, 0.05), "n0 should be the shortest sample"


@pytest.mark.parametrize("goal,best", [("min", "b"), ("max", "c")])
def test_nelson_matejcik_picks_the_clear_best(goal, best):
    data = _nm_data()
    sel = nelson_matejcik(data, first_stage=10, indifference=0.5, alpha=0.05, goal=goal, kpi="x")
    assert sel.best == best, f"goal={goal}: picked {sel.best}, expected {best}; means {sel.means}"
    need = nm_required_replications({k: v[:10] for k, v in data.items()}, 0.5, 0.05)
    assert sel.required == need, f"required {sel.required} != stage-1 formula {need}"
    assert 10 <= need <= 200, f"test data should need between 10 and 200 replications, got {need}"
    for name, v in data.items():
        assert sel.means[name] == pytest.approx(float(np.mean(v[:need])), rel=1e-12), f"{name}: mean not over N reps"
    assert (sel.goal, sel.kpi, sel.first_stage) == (goal, "x", 10), f"selection metadata wrong: {sel}"


def test_simulate_select_adds_the_second_stage(monkeypatch):
    """With plan.select, simulate tops the first stage up to the NM requirement."""
    params = {"a": (100.0, 20.0), "b": (90.0, 20.0)}
    fake_replications(monkeypatch, params)
    scenarios = {n: slot_scenario(n) for n in params}
    plan = Plan(replications=5, seed=3, jobs=1, kpi=KPI, max_replications=500,
                select={"goal": "min", "indifference": 10.0, "alpha": 0.05})
    results = simulate(scenarios, plan)
    first = {n: np.array([mu + s * _noise(3, r, n) for r in range(5)]) for n, (mu, s) in params.items()}
    need = _nm_hand(first, 10.0, 0.05)
    assert need > 5, "test case should need a second stage"
    assert len(results["a"]) == need, f"expected {need} replications after stage 2, got {len(results['a'])}"
    assert plan.notes.get("select_first_stage") == 5, f"notes: {plan.notes}"


def test_simulate_select_refuses_more_than_max_replications(monkeypatch):
    fake_replications(monkeypatch, {"a": (100.0, 50.0), "b": (90.0, 50.0)})
    plan = Plan(replications=5, seed=3, jobs=1, kpi=KPI, max_replications=20,
                select={"goal": "min", "indifference": 0.1, "alpha": 0.05})
    with pytest.raises(IopsimError, match="--select needs"):
        simulate({n: slot_scenario(n) for n in ("a", "b")}, plan)


# --------------------------------------------------------------------------- differing_parameters


def test_differing_parameters_lists_exactly_the_changed_paths():
    a = {
        "name": "a", "description": "first", "seed": 1, "horizon_days": 100,
        "stages": {"iop": {"capacity": 10, "attendance": [0.6, 0.8], "los": {"mean": 20.0}}},
        "staff": {"teams": [{"headcount": 1, "shifts": [{"days": ["mon"], "start": 9}]},
                            {"headcount": 1, "shifts": [{"days": ["tue"], "start": 12}]}]},
        "unchanged": {"deep": {"deeper": [1, 2, 3]}},
    }
    b = {
        "name": "b", "description": "second", "seed": 1, "horizon_days": 100,
        "stages": {"iop": {"capacity": 12, "attendance": [0.6, 0.9], "los": {"mean": 20.0}}},
        "staff": {"teams": [{"headcount": 1, "shifts": [{"days": ["mon"], "start": 9}]},
                            {"headcount": 2, "shifts": [{"days": ["tue"], "start": 13}]},
                            {"headcount": 1}]},
        "unchanged": {"deep": {"deeper": [1, 2, 3]}},
        "added": True,
    }
    df = differing_parameters({"a": a, "b": b})
    want = {
        "stages.iop.capacity",
        "stages.iop.attendance",          # a list of numbers is one setting
        "staff.teams.1.headcount",        # list elements by index
        "staff.teams.1.shifts.0.start",
        "staff.teams.2.headcount",        # only in b
        "added",
    }
    assert list(df.columns) == ["parameter", "a", "b"], f"columns: {list(df.columns)}"
    assert set(df["parameter"]) == want, f"extra {set(df['parameter']) - want}, missing {want - set(df['parameter'])}"
    assert len(df) == len(want), f"duplicate rows: {df['parameter'].tolist()}"
    row = df.set_index("parameter")
    assert (row.loc["stages.iop.capacity", "a"], row.loc["stages.iop.capacity", "b"]) == ("10", "12"), row.loc["stages.iop.capacity"]
    assert row.loc["staff.teams.2.headcount", "a"] == "(absent)", row.loc["staff.teams.2.headcount"]
    assert row.loc["added", "a"] == "(absent)" and row.loc["added", "b"] == "True", row.loc["added"]


def test_differing_parameters_of_the_shipped_scenarios():
    """baseline vs evening: the evening group count and the late-counselor headcount, nothing else."""
    resolved = {n: load_scenario(p).model_dump(mode="json", by_alias=True, exclude_none=True)
                for n, p in (("baseline", BASELINE), ("evening", EVENING))}
    df = differing_parameters(resolved)
    got = set(df["parameter"])
    want = {"stages.iop.tracks.evening.groups", "staff.roles.counselor.teams.1.headcount"}
    assert got == want, f"baseline vs evening differ in {sorted(got)}, expected {sorted(want)}"
    row = df.set_index("parameter").loc["stages.iop.tracks.evening.groups"]
    assert (row["baseline"], row["evening"]) == ("1", "2"), f"evening groups row: {dict(row)}"


def test_differing_parameters_of_identical_scenarios_is_empty():
    d = minimal_scenario_dict()
    df = differing_parameters({"x": d, "y": {**minimal_scenario_dict(), "name": "y", "description": "other"}})
    assert df.empty, f"identical settings (apart from name/description) reported as differing: {df}"


# --------------------------------------------------------------------------- CLI


def test_cli_select_without_indifference_is_one_error_line(tmp_scenario, tmp_path):
    path = tmp_scenario()
    out = tmp_path / "never"
    result = invoke("compare", path, path, "--select", "--jobs", "1", "-n", "2", "--out", out)
    assert_one_error_line(result, "--select", "--indifference")
    assert not out.exists(), "a refused compare created its output folder"


def test_cli_compare_with_a_single_file_is_one_error_line(tmp_scenario, tmp_path):
    out = tmp_path / "never"
    result = invoke("compare", tmp_scenario(), "--jobs", "1", "-n", "2", "--out", out)
    assert_one_error_line(result, "at least two")
    assert not out.exists(), "a refused compare created its output folder"


def test_select_on_a_kpi_undefined_in_some_replications_is_one_line(tmp_path):
    """Stays longer than the run: no program completes, so cost per completed program has nothing to divide by."""
    import yaml
    from typer.testing import CliRunner

    from iopsim import cli

    raw = {"name": "long", "seed": 3, "horizon_days": 120,
           "referrals": {"referrals_per_week": 3.5, "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}}},
           "stages": {"iop": {"capacity": 2, "los_days": {"dist": "exponential", "mean": 400.0}}}}
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump(raw))
    raw.update(name="long3")
    raw["stages"]["iop"]["capacity"] = 3
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(cli.app, ["compare", str(a), str(b), "-n", "3", "--select", "--indifference", "10",
                                     "--out", str(tmp_path / "out")])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and "Traceback" not in r.output and len(errors) == 1, r.output
    assert "cost_per_completed_program is undefined" in errors[0]
