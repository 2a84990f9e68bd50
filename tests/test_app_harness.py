"""The web app's pages under Streamlit's own test harness (``AppTest``), without a browser.

* The first page renders from the baseline without an exception, every lever as a form field.
* Changing a lever changes the scenario; an invalid value shows the CLI's message under the field.
* A run of 2 replications (60 days) shows the answer in sentences, the KPI tables and the figures,
  from its own run folder; two sessions (two browser tabs) running at once keep their own results.
* A comparison of two shipped scenarios shows the verdict.

Runs are short (60 days) and polled with a deadline, never waited for with a fixed sleep.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "sim" / "app" / "main.py"
HEADCOUNT = "staff.roles.counselor.teams.0.headcount"
DEADLINE = 240


@pytest.fixture
def app(tmp_path, monkeypatch) -> AppTest:
    """The app started in an empty folder (run folders go to its outputs/), on its first page."""
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(SCRIPT), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def field(at: AppTest, path: str, kind: str = "number_input"):
    """The form field of a scenario path (its key ends with the path)."""
    found = [w for w in getattr(at, kind) if w.key and w.key.endswith(":" + path)]
    assert len(found) == 1, f"{len(found)} {kind} fields for {path}"
    return found[0]


def plain(markdown: str) -> str:
    """Text as shown: the app escapes Markdown's special characters."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(elements) -> list[str]:
    return [plain(e.value) for e in elements]


def until(at: AppTest, done, what: str, timeout: float = DEADLINE) -> None:
    """Rerun the page (as the progress fragment does) until ``done(at)``, or fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return
        time.sleep(0.3)
    pytest.fail(f"{what}: not done after {timeout:.0f} s; errors on the page: {texts(at.error)}")


def image_captions(at: AppTest) -> list[str]:
    """The captions of the page's images (an ``image`` element in recent Streamlit, ``imgs`` before)."""
    out: list[str] = []
    for kind in ("image", "imgs"):
        for el in at.get(kind):
            caps = getattr(el, "captions", None)
            out += list(caps) if caps is not None else [i.caption for i in el.proto.imgs]
    return out


def go(at: AppTest, page: str) -> None:
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    assert at.title[0].value == page


def test_the_first_page_renders_every_lever_from_the_baseline(app):
    assert app.title[0].value == "Describe the site"
    assert [h.value for h in app.header] == ["The site and the run", "Referrals", "Places per level of care",
                                             "IOP groups", "Staff", "Costs"]
    assert not app.error
    for path in ("referrals.referrals_per_week", "referrals.sources.self.share", "stages.residential.capacity",
                 "stages.iop.tracks.day.groups", "stages.iop.tracks.evening.max_group_size",
                 "stages.iop.tracks.day.sessions.0.start_hour", HEADCOUNT,
                 "staff.roles.counselor.teams.1.shifts.0.end_hour", "costs.fixed_overhead_per_day",
                 "referrals.transport_barrier", "referrals.sources.self.payers.medicaid",
                 "payers.medicaid.rates.iop_session", "payers.commercial.denial_rate",
                 "stages.iop.tracks.evening.cost_per_client_day"):
        field(app, path)
    assert field(app, "stages.iop.tracks.day.mode", "selectbox").value == "in_person"
    assert field(app, "staff.roles.counselor.teams.1.remote", "checkbox").value is False
    assert field(app, "stages.iop.tracks.day.sessions.0.days", "multiselect").value == ["mon", "wed", "thu"]
    assert field(app, HEADCOUNT).value == 1 and field(app, "referrals.referrals_per_week").value == 5.5
    # the baseline's one warning about the plan (iopsim validate's) is shown
    assert any("weekends_only: no track accepts these clients" in t for t in texts(app.warning))


def test_changing_a_lever_changes_the_scenario(app):
    field(app, HEADCOUNT).set_value(3).run()
    field(app, "referrals.referrals_per_week").set_value(8.0).run()
    draft = app.session_state["draft"]
    assert draft.overrides() == {HEADCOUNT: 3, "referrals.referrals_per_week": 8.0}
    assert draft.scenario().staff.roles["counselor"].teams[0].headcount == 3
    assert any("2 changes" in c.value for c in app.sidebar.caption)
    assert "# changed from 1" in draft.yaml_text()
    field(app, HEADCOUNT).set_value(1).run()
    assert app.session_state["draft"].overrides() == {"referrals.referrals_per_week": 8.0}


def test_an_invalid_value_shows_the_clis_message_under_the_field(app):
    field(app, HEADCOUNT).set_value(0).run()
    assert f"{HEADCOUNT}: Input should be greater than or equal to 1 (got 0)" in texts(app.error)
    assert any("1 problem to fix before it can run" in t for t in texts(app.error))
    go(app, "Run")
    assert all(b.key != "run-start" for b in app.button)  # no run until it is fixed
    assert f"{HEADCOUNT}: Input should be greater than or equal to 1 (got 0)" in texts(app.error)


def _run(at: AppTest, days: int = 60, reps: int = 2) -> None:
    field(at, "horizon_days").set_value(days).run()
    go(at, "Run")
    at.number_input(key="run-reps").set_value(reps)
    at.number_input(key="run-jobs").set_value(1)
    at.button(key="run-start").click().run()
    assert not at.exception, at.exception


def _answered(at: AppTest) -> bool:
    return any(h.value.endswith(": the answer") for h in at.header)


def test_a_run_of_two_replications_shows_the_answer_tables_and_figures(app, tmp_path):
    field(app, HEADCOUNT).set_value(2).run()
    _run(app)
    until(app, _answered, "the run")
    sentences = [plain(m.value) for m in app.markdown]
    lead = next(s for s in sentences if s.startswith("With "))
    assert "3 counselors" in lead and "of referred patients are admitted to treatment within 14 days" in lead
    assert any(s.startswith("Staff are busy") for s in sentences)
    folders = list((tmp_path / "outputs").iterdir())
    assert len(folders) == 1 and (folders[0] / "report.html").is_file()
    assert any(f"`outputs/{folders[0].name}`" in c.value for c in app.caption)
    labels = [b.proto.label for b in app.get("download_button")]
    assert "Download the report (report.html)" in labels and "Download the run folder (zip)" in labels
    assert len(app.table) >= 10, "one KPI table per group"
    captions = image_captions(app)
    assert {"Waitlists by stage", "IOP group sizes", "Staff utilisation"} <= set(captions), captions


def test_two_sessions_running_at_once_keep_their_own_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tabs = [AppTest.from_file(str(SCRIPT), default_timeout=120) for _ in range(2)]
    for at, people in zip(tabs, (3, 5)):
        at.run()
        field(at, HEADCOUNT).set_value(people).run()
        _run(at, days=45)
    for at in tabs:
        until(at, _answered, "a session's run")
    leads = [next(plain(m.value) for m in at.markdown if plain(m.value).startswith("With ")) for at in tabs]
    assert "4 counselors" in leads[0] and "6 counselors" in leads[1], leads
    folders = sorted((tmp_path / "outputs").iterdir())
    assert len(folders) == 2 and all((f / "manifest.json").is_file() for f in folders)
    shown = [next(c.value for c in at.caption if c.value.startswith("Run folder:")) for at in tabs]
    assert shown[0] != shown[1]


def test_a_comparison_of_two_shipped_scenarios_shows_the_verdict(app):
    go(app, "Compare")
    app.multiselect(key="cmp-pick").set_value(["evening", "weekend"])
    app.number_input(key="cmp-reps").set_value(2)
    app.number_input(key="cmp-horizon").set_value(60)
    app.number_input(key="cmp-jobs").set_value(1)
    app.button(key="cmp-start").click().run()
    until(app, lambda at: any(h.value == "The verdict" for h in at.header), "the comparison")
    leads = [plain(m.value) for m in app.markdown if m.value.startswith("**weekend")]
    assert leads, [m.value for m in app.markdown]
    assert re.search(r"weekend (is better than|is worse than|and) evening|weekend is better than evening on",
                     leads[0]), leads[0]
    assert any("forest plot" in c for c in image_captions(app))


def test_a_plan_of_one_plan_shows_the_recommendation_and_the_pareto_figure(app, tmp_path):
    field(app, "horizon_days").set_value(45).run()
    go(app, "Plan")
    doc = app.session_state["plan_doc"]
    assert doc["replications"] == {"first": 3, "max": 10}, "the demonstration budget"
    for name in doc["decisions"]:
        field(app, f"decisions.{name}.range.1").set_value(1).run()
        field(app, f"decisions.{name}.range.0").set_value(1).run()
    field(app, "replications.first").set_value(2).run()
    field(app, "replications.max").set_value(2).run()
    assert any(c.value.startswith("1 plans in the ranges") for c in app.caption)
    app.number_input(key="plan-jobs").set_value(1)
    app.button(key="plan-start").click().run()
    until(app, lambda at: any(h.value == "The recommended plan" for h in at.header), "the plan")
    words = " ".join(plain(m.value) for m in app.markdown)
    assert "Recommended: 1 day counselor" in words or "No plan in the ranges meets every target" in words, words
    assert any("Cost against service" in c for c in image_captions(app))
    written = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert any(n.startswith("plan-new-site-") for n in written) and "app-inputs" in written
    plan_file = next((tmp_path / "outputs" / "app-inputs").glob("plan-new-site-*/new-site.yaml"))
    assert "horizon_days: 45" in plan_file.read_text()   # the site's change holds in every plan
