"""What ``iopsim run`` and ``iopsim compare`` print, and what ``--no-report`` and ``--targets`` write.

* Every table fits in 80 columns without Rich cutting a cell short ("…") or wrapping a label.
* Money is in the scenario's currency everywhere (a scenario in EUR prints and draws €).
* The comparison says better / worse in words; the run ends with the answer in sentences.
* ``--no-report`` draws no figures; ``iopsim report`` draws them later from the folder alone.
* ``--targets`` writes ``calibration.csv`` and the report shows it.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from iopsim import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"
WEEKEND = REPO_ROOT / "scenarios" / "weekend.yaml"
TARGETS = REPO_ROOT / "calibration" / "targets.yaml"
SHORT = ["--set", "horizon_days=90", "-n", "2", "--seed", "5", "--jobs", "1"]


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def assert_fits_80(text: str, what: str) -> None:
    """No line over 80 columns (except the lines naming a folder, which are never wrapped), no cell cut short."""
    lines = text.splitlines()
    wide = [ln for ln in lines if len(ln) > 80 and not ln.startswith(("run folder:", "comparison folder:", "calibration:"))]
    assert not wide, f"{what}: {len(wide)} lines wider than 80 columns, e.g. {wide[0]!r}"
    assert "…" not in text, f"{what}: a table cell was cut short: {[ln for ln in lines if '…' in ln][:3]}"


@pytest.fixture(scope="module")
def euro(tmp_path_factory) -> Path:
    """The baseline priced in euros."""
    d = tmp_path_factory.mktemp("euro")
    path = d / "euro.yaml"
    path.write_text(yaml.safe_dump({"extends": str(BASELINE), "name": "euro", "costs": {"currency": "EUR"}}),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory, euro):
    out = tmp_path_factory.mktemp("term") / "run"
    r = invoke("run", euro, *SHORT, "--targets", TARGETS, "--out", out)
    assert r.exit_code == 0, f"{r.output!r} {r.exception!r}"
    return r, out


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("term") / "cmp"
    r = invoke("compare", BASELINE, WEEKEND, *SHORT, "--out", out)
    assert r.exit_code == 0, f"{r.output!r} {r.exception!r}"
    return r, out


def test_run_tables_fit_80_columns_and_end_with_the_answer(ran):
    r, _ = ran
    assert_fits_80(r.stdout, "iopsim run")
    for title in ("euro: 2 replications", "By stage", "IOP tracks", "Staff by role", "Cost breakdown",
                  "Opening transient", "euro: the answer"):
        assert title in r.stdout, f"iopsim run does not print {title!r}"
    answer = r.stdout[r.stdout.index("euro: the answer"):]
    flat = " ".join(answer.split())
    assert re.search(r"\d+ % \(\d+–\d+\) of referred patients are admitted to treatment within 14 days", flat), flat
    for label in ("Admitted within 14 days", "Lost before admission", "Cost per completed program", "Intake clinician"):
        assert any(ln.lstrip().startswith(label) or f" {label}" in ln for ln in r.stdout.splitlines()), \
            f"{label!r} is not printed on one line"
    assert "intake_clinician" not in r.stdout, "a role printed by its identifier"


def test_one_currency_everywhere(ran):
    r, out = ran
    assert "€" in r.stdout and "$" not in r.stdout, "the terminal does not use the scenario's currency"
    html = (out / "report.html").read_text(encoding="utf-8")
    costs = html[html.index("<h2>Costs</h2>"):html.index("<h2>Methods")]
    assert "€" in costs and "$" not in re.sub(r"<img [^>]*>", "", costs), "the report's costs are not in €"
    assert "Money is in EUR" in html


def test_money_axes_carry_the_currency(ran, monkeypatch, tmp_path):
    """The cost figure, drawn again from the folder, labels its axis in euros with thousands separators."""
    import matplotlib

    from iopsim.outputs import figures

    _, out = ran
    seen = {}

    def keep(fig, path):
        fig.canvas.draw()
        seen["ticks"] = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
        seen["texts"] = [t.get_text() for ax in fig.axes for t in ax.texts]
        matplotlib.pyplot.close(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    figures.draw_run_figure("cost_breakdown", out)
    assert any(re.fullmatch(r"€\d{1,3}(,\d{3})+", t) for t in seen["ticks"]), seen["ticks"]
    assert not any("e+" in t or "1e" in t for t in seen["ticks"]), f"scientific notation on a money axis: {seen['ticks']}"
    assert any(t.strip().startswith("€") for t in seen["texts"]), seen["texts"]


def test_targets_write_calibration_and_the_report_shows_it(ran):
    r, out = ran
    table = pd.read_csv(out / "calibration.csv")
    assert len(table) > 0 and {"id", "model_mean", "met"} <= set(table.columns)
    assert f"calibration: {int(table['met'].sum())} of {len(table)} targets met" in " ".join(r.stdout.split())
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>How close to published figures</h2>" in html
    # In words and units: the target's description, shares in %, lengths in days, never a CI below 0
    assert "Share of ended IOP stays that ended with the treatment plan completed" in html
    assert "34.7 % to 40.7 %" in html and "45.0 days to 55.0 days" in html, "iop-completed 0.377 ± 0.03; 50 ± 5 days"
    section = html.split("How close to published figures", 1)[1].split("<h2>", 1)[0]
    assert not re.search(r">-\d|\s-\d", section), "a share or a length below zero"


def test_a_bad_targets_file_fails_before_the_run(tmp_path):
    bad = tmp_path / "targets.yaml"
    bad.write_text("targets: [{id: x, metric: nope, target: 1, tolerance: 1}]\n", encoding="utf-8")
    r = invoke("run", BASELINE, *SHORT, "--targets", bad, "--out", tmp_path / "never")
    assert r.exit_code == 2 and "nope" in r.stderr, r.output
    assert not (tmp_path / "never").exists(), "the run went ahead with a bad targets file"


def test_compare_prints_better_and_worse_in_80_columns(compared):
    r, _ = compared
    assert_fits_80(r.stdout, "iopsim compare")
    assert "weekend − baseline" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith(("Admitted within 14 days", "Total cost"))]
    assert len(rows) == 2, r.stdout
    assert all(ln.rstrip().endswith(("better", "worse", "–")) for ln in rows), rows
    assert "The answer: weekend" in r.stdout and "decisive measures" in r.stdout


def test_no_report_draws_no_figures_and_report_draws_them_later(tmp_path):
    out = tmp_path / "quiet"
    r = invoke("run", BASELINE, *SHORT, "--no-report", "--out", out)
    assert r.exit_code == 0, r.output
    assert not (out / "report.html").exists()
    assert not list(out.rglob("*.png")), f"--no-report drew {[p.name for p in out.rglob('*.png')]}"
    rep = invoke("report", out)
    assert rep.exit_code == 0, rep.output
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"waitlist.png", "census.png", "funnel.png", "cost_breakdown.png", "group_census.png",
            "session_calendar.png", "staff_utilisation.png"} <= set(pngs), pngs
    html = (out / "report.html").read_text(encoding="utf-8")
    for name in pngs:
        assert base64.b64encode((out / "figures" / name).read_bytes()).decode() in html, f"{name} not embedded"


def test_no_report_compare_draws_no_figures(tmp_path):
    out = tmp_path / "quiet-cmp"
    r = invoke("compare", BASELINE, WEEKEND, *SHORT, "--no-report", "--out", out)
    assert r.exit_code == 0, r.output
    assert not list(out.rglob("*.png")), "--no-report drew figures for a comparison"
    assert invoke("report", out).exit_code == 0
    assert (out / "figures" / "forest.png").is_file() and (out / "scenarios" / "weekend" / "figures" / "funnel.png").is_file()


def test_four_scenario_comparison_fits_80_columns_without_splitting_words(tmp_path):
    """With four scenarios the settings that differ are one setting a line, not a table of 5-letter columns."""
    names = ["baseline", "weekend", "evening", "evening-virtual"]
    r = invoke("compare", *[REPO_ROOT / "scenarios" / f"{n}.yaml" for n in names], *SHORT, "--no-report",
               "--out", tmp_path / "cmp4")
    assert r.exit_code == 0, r.output
    assert_fits_80(r.stdout, "4-scenario compare")
    settings = r.stdout.split("Settings that differ", 1)[1].split("The answer", 1)[0]
    assert "staff.roles.counselor.teams.1.headcount: baseline 1; weekend 1; evening 2;" in settings, settings[:400]
    assert "(abse\n" not in settings and "basel\n" not in settings, "a value split mid-word"


def test_the_selection_is_said_in_words_and_the_scenarios_currency(tmp_path, euro):
    """--select names the KPI in words, its direction, and the indifference zone in the scenario's money."""
    r = invoke("compare", euro, euro, *SHORT, "--select", "--kpi", "cost_per_completed_program", "--goal", "min",
               "--indifference", "200", "--out", tmp_path / "sel")
    assert r.exit_code == 0, f"{r.output!r} {r.exception!r}"
    assert_fits_80(r.stdout, "iopsim compare --select")
    text = " ".join(r.stdout.split())
    assert "Best on cost per completed program (lower is better):" in text, r.stdout
    assert "by at least €200" in text, r.stdout
    assert "cost_per_completed_program" not in text and ">=" not in text, r.stdout
