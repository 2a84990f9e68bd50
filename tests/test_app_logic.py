"""The web app's logic without a browser or Streamlit (``iopsim.app.logic``, ``iopsim.outputs.views``).

* Forms to scenario: a changed headcount or referral rate lands at its dotted path, is the
  CLI's ``--set`` and validates to the same scenario as ``iopsim run FILE --set ...``.
* An invalid value gives the CLI's one-line message, attached to the field it is about
  (also when the message names a part of the scenario, not the changed field itself).
* The YAML download keeps the file's comments on unchanged values, notes the old value on
  changed ones, writes inherited values into a child file as ``extends`` merges them, and
  parses back to the same scenario.
* Folders: claimed atomically (two claims, two folders); a run's zip holds report.html.
* Jobs report progress and can be stopped; KPI groups take every KPI, new ones included.
"""

from __future__ import annotations

import io
import re
import shutil
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import iopsim
from iopsim import cli
from iopsim.app import logic
from iopsim.outputs import views

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
HEADCOUNT = "staff.roles.counselor.teams.0.headcount"
RATE = "referrals.referrals_per_week"


@pytest.fixture
def baseline() -> logic.Draft:
    return logic.Draft(logic.file_source(SCENARIOS / "baseline.yaml"))


def _cli_error(*args) -> str:
    """The one line ``iopsim validate`` prints for a problem, without ``error:``."""
    r = CliRunner().invoke(cli.app, ["validate", *map(str, args)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.output
    return lines[0].removeprefix("error: ")


# --------------------------------------------------------------------------- forms to scenario


def test_a_changed_headcount_and_referral_rate_land_at_their_paths_and_validate(baseline):
    assert baseline.overrides() == {}
    baseline.set(HEADCOUNT, 3)
    baseline.set(RATE, 9.0)
    assert baseline.overrides() == {HEADCOUNT: 3, RATE: 9.0}
    assert sorted(baseline.set_strings()) == sorted([f"{HEADCOUNT}=3", f"{RATE}=9.0"])
    sc, problems = baseline.check()
    assert sc is not None and not [p for p in problems if p.level == "error"]
    assert sc.staff.roles["counselor"].teams[0].headcount == 3 and sc.referrals.referrals_per_week == 9.0
    # exactly what the CLI's --set gives
    assert sc == iopsim.load_scenario(SCENARIOS / "baseline.yaml", baseline.set_strings())
    baseline.set(HEADCOUNT, 1)  # back to the file's value: no longer a change
    assert baseline.overrides() == {RATE: 9.0}


def test_lists_that_grow_become_one_override_of_the_whole_list(baseline):
    baseline.add_item("staff.roles.counselor.teams")
    changes = baseline.overrides()
    assert list(changes) == ["staff.roles.counselor.teams"] and len(changes["staff.roles.counselor.teams"]) == 3
    sc, _ = baseline.check()
    assert sc is not None and sum(t.headcount for t in sc.staff.roles["counselor"].teams) == 3


def test_the_form_knows_each_field_from_the_schema():
    head = logic.field_spec(HEADCOUNT)
    assert head.kind == "int" and head.ge == 1 and "people" in head.description.lower()
    share = logic.field_spec("referrals.sources.self.share")
    assert share.kind == "float" and share.ge == 0 and share.le == 1
    assert logic.field_spec("stages.iop.tracks.day.sessions.0.days").kind == "days"
    admission = logic.field_spec("stages.iop.tracks.day.admission")
    assert admission.kind == "choice" and set(admission.choices) == {"rolling", "cohort"}
    cap = logic.field_spec("stages.php.capacity")
    assert cap.kind == "int" and cap.optional and "Allowed: at least 1" in cap.help()


# --------------------------------------------------------------------------- messages


def test_an_invalid_value_gives_the_clis_line_next_to_its_field(baseline):
    baseline.set(HEADCOUNT, 0)
    sc, problems = baseline.check()
    assert sc is None and len(problems) == 1
    (p,) = problems
    assert p.field == HEADCOUNT and p.level == "error"
    assert p.line == _cli_error(SCENARIOS / "baseline.yaml", "--set", f"{HEADCOUNT}=0").replace(
        str(SCENARIOS / "baseline.yaml"), p.source)
    assert p.text == f"{HEADCOUNT}: Input should be greater than or equal to 1 (got 0)"
    placed, general = logic.place(problems, [RATE, HEADCOUNT], ["staff.roles.counselor"], baseline.overrides())
    assert placed == {HEADCOUNT: [p]} and general == []


def test_every_invalid_field_gets_its_own_message_at_the_change_that_caused_it(baseline):
    baseline.set(HEADCOUNT, 0)
    baseline.set("stages.iop.tracks.day.min_group_size", 13)      # a message about the track, not the field
    baseline.set("referrals.sources.self.share", 0.5)             # a message about all the shares
    sc, problems = baseline.check()
    assert sc is None
    fields = {p.field for p in problems}
    assert fields == {HEADCOUNT, "stages.iop.tracks.day", "referrals.sources"}, problems
    texts = " | ".join(p.text for p in problems)
    assert "min_group_size (13) exceeds max_group_size (12)" in texts and "source shares must sum to 1" in texts
    widgets = [HEADCOUNT, "stages.iop.tracks.day.min_group_size", "stages.iop.tracks.day.max_group_size",
               "referrals.sources.self.share", "referrals.sources.provider.share"]
    placed, general = logic.place(problems, widgets, ["stages.iop.tracks.day", "referrals.sources"],
                                  baseline.overrides())
    assert not general
    assert set(placed) == {HEADCOUNT, "stages.iop.tracks.day.min_group_size", "referrals.sources.self.share"}
    # shares that sum to 1 again, and the rest put right: valid
    baseline.set("referrals.sources.provider.share", 0.15)
    baseline.set(HEADCOUNT, 2)
    baseline.set("stages.iop.tracks.day.min_group_size", 6)
    assert baseline.check()[0] is not None


def test_warnings_about_the_plan_are_the_validate_commands(baseline):
    baseline.set("stages.iop.tracks.evening.groups", 2)   # two evening groups, one late counselor
    sc, problems = baseline.check()
    assert sc is not None
    mine = {(p.field, p.message) for p in problems}
    assert mine == {(f.field, f.message) for f in iopsim.check(sc)}
    assert any(p.field == "stages.iop.tracks.evening.sessions.0" and "cancelled" in p.message for p in problems)
    placed, _ = logic.place(problems, ["stages.iop.tracks.evening.sessions.0.start_hour"],
                            ["stages.iop.tracks.evening.sessions.0", "stages.iop"])
    assert "stages.iop.tracks.evening.sessions.0" in placed


# --------------------------------------------------------------------------- YAML out


def _copy_scenarios(tmp_path: Path) -> Path:
    dest = tmp_path / "scenarios"
    shutil.copytree(SCENARIOS, dest, ignore=shutil.ignore_patterns("plans", "sweeps"))
    return dest


def test_an_unchanged_scenario_downloads_as_the_file_itself(baseline):
    assert baseline.yaml_text() == (SCENARIOS / "baseline.yaml").read_text(encoding="utf-8")


def test_the_download_keeps_comments_on_unchanged_values_and_parses_back(baseline, tmp_path):
    baseline.set(HEADCOUNT, 3)
    baseline.set(RATE, 9.0)
    baseline.set("stages.iop.tracks.day.sessions.0.start_hour", 10.0)
    text = baseline.yaml_text()
    original = (SCENARIOS / "baseline.yaml").read_text(encoding="utf-8")
    changed = [ln for ln in text.splitlines() if ln not in original.splitlines()]
    assert len(changed) == 3, changed
    # unchanged values keep their source comments, word for word
    for line in ("        max_group_size: 12              # legal cap 12 [9 CCR 10345, H]",
                 "        - headcount: 1                  # late counselor for the evening track; assumption",
                 "    capacity: 16                        # beds; assumption"):
        assert line in text.splitlines()
    # a changed value says what it was, and what its comment said about the old value
    assert re.search(r"^  referrals_per_week: 9 +# changed from 5\.5; it said: assumption \(calibrated to the DATCAP "
                     r"site size\)$", text, re.M)
    assert "# changed from 1; it said: day counselor; assumption" in text
    assert "  # Mon..Sun, relative; normalised to average 1." in text.splitlines()  # the comment line below stays
    path = _copy_scenarios(tmp_path) / "my-site.yaml"
    path.write_text(text, encoding="utf-8")
    assert iopsim.load_scenario(path) == baseline.scenario()


def test_values_change_in_place_and_every_other_byte_stays(baseline, tmp_path):
    """Values inside one-line and multi-line flow mappings, a list of days, a name that needs quotes,
    and a share too small for a plain decimal are written where they are; nothing else moves."""
    changes = {"name": "north site: pilot", "stages.iop.tracks.day.sessions.0.days": ["mon", "tue"],
               "stages.iop.tracks.day.sessions.0.start_hour": 9.5, "payers.commercial.rates.php_day": 80.0,
               "referrals.sources.self.placement.not_eligible": 0.10001, "referrals.sources.self.placement.iop": 0.49999,
               "stages.aftercare.capacity": 0.00001e6}
    for path, value in changes.items():
        baseline.set(path, value)
    text = baseline.yaml_text()
    original = (SCENARIOS / "baseline.yaml").read_text(encoding="utf-8")
    before, after = original.splitlines(), text.splitlines()
    assert len(before) == len(after), "no line was added, removed or joined"
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == 5, changed   # name, the day session, the commercial rates' 2nd line, self's placement, aftercare
    assert 'name: "north site: pilot"  # changed from baseline' in after
    assert "          - {days: [mon, tue], start_hour: 9.5, hours: 3}    # assumption" in after
    assert "            php_day: 80, residential_day: 114.20, aftercare_day: 25.94}" in after
    import yaml  # the model's reader

    for v in (1e-05, 0.1, 12.0, 2.5e-7, True, "yes", "a: b", "day_2"):
        assert yaml.safe_load(f"x: {logic._plain(v)}")["x"] == v, v
    path = _copy_scenarios(tmp_path) / "north.yaml"
    path.write_text(text, encoding="utf-8")
    assert iopsim.load_scenario(path) == baseline.scenario()


def test_a_child_file_gets_inherited_values_as_extends_merges_them(tmp_path):
    weekend = logic.Draft(logic.file_source(SCENARIOS / "weekend.yaml"))
    weekend.set(RATE, 8.0)                                          # inherited scalar
    weekend.set("stages.iop.tracks.day.sessions.0.start_hour", 10.0)  # inside an inherited list
    weekend.set("staff.roles.counselor.teams.2.headcount", 2)       # in the child's own list
    text = weekend.yaml_text()
    original = (SCENARIOS / "weekend.yaml").read_text(encoding="utf-8")
    assert text.startswith(original.split("stages:")[0])            # header comments and extends untouched
    assert "        - headcount: 1                  # day counselor (as baseline)" in text.splitlines()
    assert re.search(r"^  referrals_per_week: 8 +# changed from 5\.5 \(inherited\)$", text, re.M)
    assert "          - {days: [mon, wed, thu], start_hour: 10, hours: 3}" in text.splitlines()
    assert "weekend:" in text and "attendance: [0.66, 0.80]        # assumption: as the other tracks" in text
    folder = _copy_scenarios(tmp_path)
    (folder / "my-weekend.yaml").write_text(text, encoding="utf-8")
    assert iopsim.load_scenario(folder / "my-weekend.yaml") == weekend.scenario()


def test_an_added_team_downloads_and_parses_back(baseline, tmp_path):
    baseline.add_item("staff.roles.counselor.teams")
    baseline.set("staff.roles.counselor.teams.2.headcount", 2)
    text = baseline.yaml_text()
    assert "# late counselor for the evening track; assumption" in text
    path = _copy_scenarios(tmp_path) / "three-teams.yaml"
    path.write_text(text, encoding="utf-8")
    sc = iopsim.load_scenario(path)
    assert sc == baseline.scenario() and [t.headcount for t in sc.staff.roles["counselor"].teams] == [1, 1, 2]


# --------------------------------------------------------------------------- uploads


def test_an_uploaded_child_of_a_shipped_scenario_loads(tmp_path):
    text = "# my site\nextends: baseline.yaml\nname: my-site\nreferrals:\n  referrals_per_week: 7  # our intake log\n"
    source = logic.upload_source("my-site.yaml", text.encode(), tmp_path / "outputs", [SCENARIOS / "baseline.yaml"])
    assert source.label == "my-site.yaml (uploaded)" and source.text == text
    assert source.path.is_file() and (tmp_path / "outputs" / logic.INPUTS) in source.path.parents
    d = logic.Draft(source)
    assert d.name == "my-site" and d.base["referrals"]["referrals_per_week"] == 7
    d.set(HEADCOUNT, 2)
    assert "  referrals_per_week: 7  # our intake log" in d.yaml_text().splitlines()
    assert "extends: baseline.yaml" in d.yaml_text()  # the user's own text, not the path the model read


def test_a_broken_upload_is_one_line_naming_the_field(tmp_path):
    source = logic.upload_source("bad.yaml", b"extends: baseline.yaml\nhorizon_days: -3\n", tmp_path,
                                 [SCENARIOS / "baseline.yaml"])
    with pytest.raises(iopsim.ScenarioError) as exc:
        logic.Draft(source)
    assert exc.value.field == "horizon_days" and "\n" not in str(exc.value)
    assert str(exc.value).startswith("bad.yaml (uploaded): horizon_days: ")
    with pytest.raises(iopsim.ScenarioError, match="not UTF-8"):
        logic.upload_source("latin.yaml", "name: caf\xe9".encode("latin-1"), tmp_path)


# --------------------------------------------------------------------------- folders and jobs


def test_claimed_folders_are_never_shared(tmp_path):
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(logic.claim_folder(tmp_path, "baseline"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(p.is_dir() and not any(p.iterdir()) for p in got)


def test_a_job_reports_progress_and_can_be_stopped():
    started = threading.Event()

    def work(job):
        for i in range(10_000):
            job.progress(i, 10_000)
            started.set()
            time.sleep(0.001)
        return Path("never")

    job = logic.Job("run", "test", work)
    assert started.wait(10) and job.running and job.total == 10_000
    job.cancel()
    assert job.wait(10) and job.state == "cancelled" and job.folder is None

    def broken(job):
        raise iopsim.IopsimError("outputs/x: output folder exists and is not empty; choose another --out")

    failed = logic.Job("run", "test", broken)
    assert failed.wait(10) and failed.state == "failed" and failed.error.startswith("outputs/x: output folder")


def test_a_run_job_writes_its_own_folder_and_the_zip_holds_the_report(baseline, tmp_path):
    baseline.set("horizon_days", 30)
    job = logic.start_run(baseline, replications=2, outputs=tmp_path / "outputs", jobs=1)
    assert job.wait(300), "the run did not finish"
    assert job.state == "done", job.error
    assert job.folder.parent == tmp_path / "outputs" and job.folder.name.startswith("baseline-")
    assert job.done == job.total == 2
    manifest = iopsim.api.read_manifest(job.folder)
    assert manifest["overrides"] == ["horizon_days=30"] and manifest["scenario_file"] == str(SCENARIOS / "baseline.yaml")
    names = zipfile.ZipFile(io.BytesIO(logic.zip_folder(job.folder))).namelist()
    assert f"{job.folder.name}/report.html" in names and f"{job.folder.name}/summary.csv" in names
    view = views.run_view(job.folder)
    assert view.answer and view.answer[0].startswith("With 1 intake clinician, 2 counselors")
    assert any(path.name == "waitlist.png" for _c, path in view.figures)
    summary = pd.read_csv(job.folder / "summary.csv")
    assert sum(len(rows) for _g, rows in view.groups) == len(summary)


# --------------------------------------------------------------------------- the command


def test_iopsim_app_serves_the_script_locally_and_sends_nothing_anywhere():
    argv = cli.app_command("127.0.0.1", 8600)
    script = Path(argv[argv.index("run") + 1])
    assert argv[:3] == [sys.executable, "-m", "streamlit"] and script.name == "main.py" and script.is_file()
    flags = dict(zip(argv[argv.index("run") + 2::2], argv[argv.index("run") + 3::2]))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "8600"
    assert flags["--browser.gatherUsageStats"] == "false" and flags["--server.headless"] == "true"
    r = CliRunner().invoke(cli.app, ["app", "--help"])
    assert r.exit_code == 0 and "--port" in r.output and "--host" in r.output and "127.0.0.1" in r.output


def test_iopsim_app_on_a_port_in_use_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(cli.app, ["app", "--port", str(port)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port}"), r.output


# --------------------------------------------------------------------------- results in words


def test_kpi_groups_hold_every_kpi_new_ones_included():
    summary = pd.DataFrame([
        {"kpi": "referral_admitted_within_14_days", "label": "Share admitted within 14 days", "unit": "fraction",
         "mean": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 5},
        {"kpi": "iop_track_day_2_sessions_held", "label": "IOP day_2 track: sessions held", "unit": "sessions",
         "mean": 100.0, "ci_low": 90.0, "ci_high": 110.0, "n": 5},
        {"kpi": "iop_track_day_sessions_held", "label": "IOP day track: sessions held", "unit": "sessions",
         "mean": 90.0, "ci_low": 90.0, "ci_high": 90.0, "n": 5},
        {"kpi": "staff_counselor_utilisation", "label": "Staff counselor: utilisation", "unit": "fraction",
         "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 5},
        {"kpi": "revenue_total", "label": "Revenue", "unit": "currency", "mean": 1.2e6, "ci_low": 1.1e6,
         "ci_high": 1.3e6, "n": 5},           # a KPI this code has never heard of
        {"kpi": "break_even_referrals_per_week", "label": "Break-even referrals a week", "unit": "patients",
         "mean": 4.0, "ci_low": 3.0, "ci_high": 5.0, "n": 5},
        {"kpi": "something_new", "label": "Something new", "unit": "patients", "mean": 1.0, "ci_low": float("nan"),
         "ci_high": float("nan"), "n": 1},
    ])
    groups = dict(views.kpi_groups(summary, "USD", tracks=["day", "day_2"], roles=["counselor"]))
    assert sum(len(r) for r in groups.values()) == len(summary)
    assert [r["kpi"] for r in groups["Costs and money"]] == ["revenue_total", "break_even_referrals_per_week"]
    assert [r["kpi"] for r in groups["IOP day 2 track"]] == ["iop_track_day_2_sessions_held"]
    assert [r["kpi"] for r in groups["IOP day track"]] == ["iop_track_day_sessions_held"]
    assert groups["IOP day track"][0]["ci"] == "the same in every replication"
    first = groups["Program"][0]
    assert first == {"kpi": "referral_admitted_within_14_days", "label": "Share admitted within 14 days",
                     "mean": "80.0 %", "ci": "70.0–90.0 %", "unit": "%"}
    assert groups["Costs and money"][0]["mean"] == "$1,200,000"
    assert next(r for r in groups["Program"] if r["kpi"] == "something_new")["ci"] == "–"
    assert list(groups)[0] == "Program"


def test_a_plan_runs_with_the_sites_changes_except_what_a_lever_sets():
    plan = logic.load_plan_file(SCENARIOS / "plans" / "new-site.yaml")
    site = {HEADCOUNT: 3, RATE: 8.0, "horizon_days": 365}
    doc, dropped = logic.plan_document(plan, SCENARIOS / "baseline.yaml", site)
    assert dropped == [HEADCOUNT]                         # the day-counselor lever sets it in every plan
    assert doc["set"] == {"horizon_days": 365, RATE: 11}  # the plan's own set wins over the site's
    assert Path(doc["base"]).is_absolute() and logic.plan_space(doc) == 128
