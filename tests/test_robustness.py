"""Assumptions as data (``uncertain:``) and ``compare --robust``: ranges, one-way moves and thresholds.

The synthetic pair: two one-stage IOP scenarios, B with more places and a
lower fixed overhead.  The assumption is the IOP cost per client-day, which
changes no patient's path, so under common random numbers B's extra
client-days D are the same whatever its value, and the difference in total
cost is exactly linear in it: diff(u) = u * D - 50 * W (W the observation
window in days).  It crosses zero at u* = 50 W / D.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import iopsim
from iopsim import cli
from iopsim.analysis.robustness import Point, threshold
from iopsim.schema.assumptions import set_assumption
from iopsim.schema.scenario import load_scenario, set_path

REPO_ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def pair(folder: Path, cost_range=(0.0, 200.0)) -> tuple[Path, Path]:
    base = {
        "name": "a", "seed": 5, "horizon_days": 400, "warmup_days": 40,
        "referrals": {"referrals_per_week": 28.0, "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {"iop": {"capacity": 3, "los_days": {"dist": "exponential", "mean": 1.0},
                           "patience_days": {"dist": "exponential", "mean": 2.0}, "cost_per_patient_day": 10.0}},
        "costs": {"fixed_overhead_per_day": 100.0},
        "uncertain": {"stages.iop.cost_per_patient_day": {"range": list(cost_range), "note": "IOP cost per client-day"},
                      "stages.iop.patience_days.mean": [1.0, 3.0]},
    }
    a = folder / "a.yaml"
    a.write_text(yaml.safe_dump(base, sort_keys=False))
    b = folder / "b.yaml"
    b.write_text(yaml.safe_dump({"extends": "a.yaml", "name": "b", "stages": {"iop": {"capacity": 5}},
                                 "costs": {"fixed_overhead_per_day": 50.0}}, sort_keys=False))
    return a, b


@pytest.fixture(scope="module")
def robust_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust")
    a, b = pair(folder)
    cmp = iopsim.compare([a, b], replications=8, kpi="cost_total", robust=True)
    return cmp, folder


def test_the_threshold_of_a_linear_difference_is_its_analytic_crossing(robust_pair):
    cmp, _ = robust_pair
    rows = cmp.robustness.set_index("assumption")
    row = rows.loc["stages.iop.cost_per_patient_day"]
    per_rep = {n: r.per_replication.sort_values("replication") for n, r in cmp.runs.items()}
    window = 400 - 40
    extra_days = float(np.mean((per_rep["b"]["cost_patient_days"] - per_rep["a"]["cost_patient_days"]) / 10.0))
    assert extra_days > 0, "more places must mean more client-days"
    crossing = 50.0 * window / extra_days
    assert 0 < crossing < 200, f"the test needs the crossing inside the range, got {crossing}"
    assert bool(row["flips"]), row
    assert row["threshold"] == pytest.approx(crossing, rel=1e-6), (row["threshold"], crossing)
    assert row["threshold_low"] <= crossing <= row["threshold_high"]
    # both ends, exactly on the line diff(u) = u * D - 50 W
    assert row["diff_at_low"] == pytest.approx(-50.0 * window, rel=1e-9)
    assert row["diff_at_high"] == pytest.approx(200.0 * extra_days - 50.0 * window, rel=1e-9)


def test_an_assumption_that_cannot_move_the_kpi_gives_a_zero_bar(tmp_path):
    a, b = pair(tmp_path)
    cmp = iopsim.compare([a, b], replications=6, kpi="programs_completed", robust=True)
    row = cmp.robustness.set_index("assumption").loc["stages.iop.cost_per_patient_day"]
    assert row["change_at_low"] == 0.0 and row["change_at_high"] == 0.0, "a cost cannot change completions under CRN"
    assert not row["flips"]
    moved = cmp.robustness.set_index("assumption").loc["stages.iop.patience_days.mean"]
    assert moved["change_at_low"] != 0.0, "patience does change completions"


def test_the_comparison_folder_and_report_say_what_the_verdict_rests_on(robust_pair, tmp_path):
    cmp, _ = robust_pair
    folder = cmp.save(tmp_path / "cmp")
    assert (folder / "robustness.csv").is_file() and (folder / "figures" / "tornado.png").is_file()
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "What the verdict rests on" in html
    assert "only if the IOP cost per client-day is at most" in html, "the verdict names the assumption it rests on"


def test_cli_compare_robust_prints_the_table_and_the_sentence(tmp_path):
    a, b = pair(tmp_path)
    r = invoke("compare", a, b, "-n", "4", "--kpi", "cost_total", "--robust", "--out", tmp_path / "out", "--no-report")
    assert r.exit_code == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "the difference at the ends of each assumption's range" in text
    assert "It depends on 1 of the 2 declared assumptions" in text, text[-600:]


def test_threshold_interval_reaches_the_end_where_the_interval_holds_zero():
    pts = [Point(0.0, 10.0, -100.0, 130.0, 6), Point(0.05, -200.0, -400.0, 1.0, 6), Point(0.1, -430.0, -700.0, -140.0, 6)]
    t, lo, hi = threshold(pts)
    assert 0 < t < 0.05 and lo == 0.0 and 0.05 <= hi < 0.1


def test_a_share_moves_with_its_siblings_rescaled():
    tree = {"stages": {"iop": {"availability": {"a": 0.25, "b": 0.35, "w": 0.1, "f": 0.3}}}}
    set_assumption(tree, ["stages", "iop", "availability", "w"], 0.2, lambda t, p, v: set_path(t, p, v, "x"))
    av = tree["stages"]["iop"]["availability"]
    assert av["w"] == 0.2 and sum(av.values()) == pytest.approx(1.0)
    assert av["a"] / av["b"] == pytest.approx(0.25 / 0.35), "the others keep their proportions"


def test_shipped_scenarios_declare_their_decisive_assumptions():
    sc = load_scenario(REPO_ROOT / "scenarios" / "weekend.yaml")
    assert "stages.iop.availability.weekends_only" in sc.uncertain
    assert sc.uncertain["stages.iop.availability.weekends_only"].range == (0.0, 0.2)
    assert len(sc.uncertain) >= 10


BAD = {
    "unknown path": ({"stages.iop.capasity": [1, 2]}, "uncertain.stages.iop.capasity", "no such field"),
    "low > high": ({"stages.iop.capacity": [5, 2]}, "uncertain.stages.iop.capacity.range", "low must not exceed high"),
    "outside allowed": ({"relapse.return_probability": [0.2, 1.5]}, "uncertain.relapse.return_probability.range",
                        "not an allowed value"),
    "not a number": ({"name": [0, 1]}, "uncertain.name", "not a number"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_uncertain_entries_fail_in_one_line(tmp_path, case):
    raw = yaml.safe_load((REPO_ROOT / "scenarios" / "baseline.yaml").read_text())
    entry, field, words = BAD[case]
    raw["uncertain"] = entry
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = invoke("validate", path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.stderr)
    assert field in lines[0] and words in lines[0], lines[0]


def test_validate_lists_the_assumptions():
    r = invoke("validate", REPO_ROOT / "scenarios" / "baseline.yaml", "--assumptions")
    assert r.exit_code == 0
    assert "Assumptions (11 declared under uncertain:)" in r.stdout
    assert "stages.iop.availability.weekends_only" in r.stdout


def test_points_are_stored_with_the_row(robust_pair):
    cmp, _ = robust_pair
    pts = json.loads(cmp.robustness.iloc[0]["points"])
    assert all(len(p) == 5 and math.isfinite(p[0]) for p in pts)


def test_a_whole_number_assumption_is_bisected_on_whole_numbers(tmp_path):
    """Places are a count: bisection never asks for 3.5 places."""
    a, b = pair(tmp_path)
    doc = yaml.safe_load(a.read_text())
    doc["uncertain"] = {"stages.iop.capacity": [1, 9]}
    a.write_text(yaml.safe_dump(doc))
    doc_b = yaml.safe_load(b.read_text())
    doc_b["stages"]["iop"] = {"cost_per_patient_day": 30.0}  # B differs in its cost only
    doc_b["stages"]["iop"]["capacity"] = 3
    b.write_text(yaml.safe_dump(doc_b))
    cmp = iopsim.compare([a, b], replications=4, kpi="cost_total", robust=True)
    row = cmp.robustness.iloc[0]
    assert row["flips"], "the case must flip, or nothing is bisected"
    pts = json.loads(row["points"])
    assert len(pts) > 3 and all(float(p[0]).is_integer() for p in pts), pts


def test_a_value_outside_its_declared_range_is_a_warning():
    r = invoke("validate", REPO_ROOT / "scenarios" / "baseline.yaml", "--set", "relapse.return_probability=0.9",
               "--assumptions")
    assert r.exit_code == 0
    assert "uncertain.relapse.return_probability: the scenario's value 0.9 is outside the declared range 0.3 to 0.7" \
        in " ".join(r.stderr.split()), r.stderr


def test_the_established_site_moves_its_fitted_values_across_their_posterior_intervals():
    sc = load_scenario(REPO_ROOT / "scenarios" / "established.yaml")
    a = sc.uncertain["referrals.referrals_per_week"]
    assert a.range == (6.11, 8.33) and "posterior 90 % interval" in a.source
    assert sc.uncertain["stages.iop.availability.weekends_only"].range == (0.0, 0.2), "the rest are the baseline's"
    from iopsim.analysis.checks import assumption_findings

    assert assumption_findings(sc) == [], "every declared range holds the established site's value"
    for name in ("baseline", "evening", "weekend"):
        assert assumption_findings(load_scenario(REPO_ROOT / "scenarios" / f"{name}.yaml")) == [], name
