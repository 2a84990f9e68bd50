"""Figures a manager reads at a glance (``iopsim.outputs.figures``), checked on the drawn matplotlib objects.

Each test replaces the module's ``_save`` to keep the figure instead of writing it, then looks at
its axes, lines and texts: no empty panels, every difference in its own unit, money with the
currency symbol, people and settings named in words, the group-size rule drawn on the census.
"""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from iopsim.outputs import figures


@pytest.fixture
def drawn(monkeypatch):
    figs = []

    def keep(fig, path):
        fig.canvas.draw()
        figs.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    yield figs
    for f in figs:
        plt.close(f)


def texts(fig) -> list[str]:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts] + [ax.get_title(), ax.get_title(loc="left"), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return [t for t in out if t]


def plotted(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches) and ax.axison


def levels(waiting: dict[str, float], days: int = 56, reps: int = 2) -> pd.DataFrame:
    rows = []
    for r in range(reps):
        for stage, level in waiting.items():
            for d in range(days):
                w = level * (1 + 0.1 * np.sin(d + r))
                rows.append({"replication": r, "stage": stage, "day": d, "waitlist_mean": w, "waitlist_max": w,
                             "census_mean": 5.0, "census_max": 6.0})
    return pd.DataFrame(rows)


def test_a_stage_where_no_one_waited_says_so_instead_of_an_empty_panel(drawn, tmp_path):
    figures._level_figure(levels({"intake": 0.5, "residential": 0.0, "iop": 2.0, "aftercare": 0.0}),
                          "waitlist_mean", "Waitlist", "waiting", tmp_path / "w.png")
    (fig,) = drawn
    panels = [ax for ax in fig.axes if plotted(ax)]
    assert [ax.get_title(loc="left") for ax in panels] == ["Intake", "IOP"], "only stages with a waitlist get a panel"
    assert "No one waited at Residential/inpatient and Aftercare during the run." in texts(fig), texts(fig)


def test_nobody_waiting_anywhere_is_one_sentence(drawn, tmp_path):
    figures._level_figure(levels({"intake": 0.0, "iop": 0.0}), "waitlist_mean", "Waitlist", "waiting", tmp_path / "w.png")
    (fig,) = drawn
    assert not [ax for ax in fig.axes if plotted(ax)], "an empty axis was drawn"
    assert "No one waited at any stage during the run." in texts(fig)


def test_group_census_shows_the_minimum_and_maximum_group_size(drawn, tmp_path):
    rng = np.random.default_rng(0)
    sessions = pd.DataFrame({"track": ["day"] * 200 + ["evening"] * 200, "status": "held",
                             "attendees": np.r_[rng.integers(0, 7, 200), rng.integers(2, 11, 200)]})
    figures.group_census_figure(sessions, tmp_path / "g.png", {"day": (6, 12), "evening": (6, 12)})
    (fig,) = drawn
    ax = fig.axes[0]
    vertical = sorted({float(line.get_xdata()[0]) for line in ax.lines if len(set(line.get_xdata())) == 1})
    assert 5.5 in vertical and 12.5 in vertical, f"reference lines at {vertical}, want 5.5 (minimum 6) and 12.5 (maximum 12)"
    words = " ".join(texts(fig))
    assert "minimum group size 6" in words and "maximum 12" in words, words
    assert re.search(r"Day track: mean [\d.]+ attending, \d+% below minimum", words), words
    assert ax.get_xlim()[1] >= 12.5, "the maximum group size is off the axis"


def _diffs() -> pd.DataFrame:
    rows = []
    for kpi, unit, base, alt, lo, hi in (
        ("cost_per_completed_program", "currency", 7620.0, 7151.0, -530.0, -408.0),
        ("cost_total", "currency", 1.085e6, 1.122e6, 33669.0, 40298.0),
        ("iop_admitted_wait_p90_days", "days", 0.004, 0.06, 0.03, 0.08),
        ("programs_completed", "patients", 143.0, 157.6, 12.9, 16.4),
        ("iop_census_mean", "patients", 12.3, 13.9, 1.4, 1.8),
    ):
        rows.append({"kpi": kpi, "label": kpi, "unit": unit, "scenario": "evening", "mean": base, "diff": 0.0,
                     "diff_ci_low": math.nan, "diff_ci_high": math.nan, "significant": False})
        rows.append({"kpi": kpi, "label": kpi, "unit": unit, "scenario": "weekend", "mean": alt, "diff": alt - base,
                     "diff_ci_low": lo, "diff_ci_high": hi, "significant": True})
    return pd.DataFrame(rows)


def test_forest_plot_is_in_each_kpis_own_units(drawn, tmp_path):
    figures.forest_figure(_diffs(), "cost_per_completed_program", tmp_path / "f.png", currency="USD")
    (fig,) = drawn
    panels = {ax.get_title(loc="left"): ax for ax in fig.axes}
    assert len(panels) == 5, f"one panel per KPI: {list(panels)}"
    cost = panels["Cost per completed program ($)"]
    lo, hi = cost.get_xlim()
    assert lo < -530 and -408 < 0 < hi < 200, f"cost per program in dollars on its own axis: {cost.get_xlim()}"
    assert any(t.get_text().startswith("−$") for t in cost.get_xticklabels()), "money axis without $"
    total = panels["Total cost ($)"]
    assert total.get_xlim()[1] > 40298 and any("," in t.get_text() for t in total.get_xticklabels())
    notes = {ax.get_title(loc="left"): [t.get_text() for t in ax.texts] for ax in fig.axes}
    wait = " ".join(notes["IOP: 90th percentile wait of those admitted (days)"])
    assert "%" not in wait, f"a relative change of a baseline near zero is drawn: {wait!r}"
    assert "−6 %" in " ".join(notes["Cost per completed program ($)"]) and "better" in " ".join(notes["Cost per completed program ($)"])
    assert "worse" in " ".join(notes["Total cost ($)"])
    assert "neither better nor worse" in " ".join(notes["IOP: average census (patients)"])
    colours = {ax.get_title(loc="left"): ax.lines[0].get_color() for ax in fig.axes}
    assert colours["Cost per completed program ($)"] == figures.GOOD and colours["Total cost ($)"] == figures.BAD
    assert colours["IOP: average census (patients)"] == figures.GREY


def test_people_are_named_in_words(drawn, tmp_path):
    per_rep = pd.DataFrame({"staff_intake_clinician_utilisation": [0.2, 0.25], "staff_counselor_utilisation": [0.4, 0.42],
                            "cost_labour_intake_clinician": [1.0e5, 1.1e5], "cost_overhead": [5e4, 5e4],
                            "cost_assessments": [0.0, 0.0]})
    figures.utilisation_figure(per_rep, tmp_path / "u.png")
    figures.cost_figure(per_rep, tmp_path / "c.png", currency="GBP", days=365)
    util, cost = drawn
    words = texts(util) + texts(cost)
    assert "Intake clinician" in words and "Labour: intake clinician" in words, words
    assert not [w for w in words if "_" in w], f"identifiers in a figure: {[w for w in words if '_' in w]}"
    assert any(re.fullmatch(r"£\d{1,3}(,\d{3})*", t.get_text()) for t in cost.axes[0].get_xticklabels())
    assert any("no cost: intake assessments" in w for w in words), "a zero cost component should be named, not drawn"


def test_sweep_heat_map_reads_well(drawn, tmp_path):
    rows = []
    for g in (1, 2, 3):
        for a in (0.55, 0.85):
            v = 9000 - 2500 * a + 10 * g
            rows.append({"factor:stages.iop.tracks.evening.groups": g, "factor:stages.iop.tracks.evening.attendance.0": a,
                         "cost_per_completed_program": v})
    figures.sweep_heatmap(pd.DataFrame(rows), "stages.iop.tracks.evening.groups", "stages.iop.tracks.evening.attendance.0",
                          "cost_per_completed_program", "Cost per completed program ($)", tmp_path / "h.png",
                          unit="currency", currency="USD")
    (fig,) = drawn
    ax = fig.axes[0]
    assert ax.get_xlabel() == "IOP evening track: groups"
    assert ax.get_ylabel() == "IOP evening track: attendance, phase 1"
    labels = [t for t in ax.texts]
    assert len(labels) == 6 and all(re.fullmatch(r"\$\d,\d{3}", t.get_text()) for t in labels), [t.get_text() for t in labels]
    inks = {t.get_color() for t in labels}
    assert inks == {"black", "white"}, f"value labels should contrast with light and dark cells: {inks}"
