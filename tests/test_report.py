"""The HTML report, regenerated from a copied run / comparison folder with ``iopsim report``.

One tiny ``iopsim run`` and one tiny ``iopsim compare`` (baseline with a tracked IOP, so the groups
and staff figures exist) are made once per module; each test copies a finished folder elsewhere,
deletes ``report.html`` and regenerates it from the files alone.  The report opens with the answer
in words, then the warnings (a run) or red flags (a comparison); it has a staffing table per role,
a groups table per IOP track and, when the folder holds ``calibration.csv``, the calibration table.
"""

from __future__ import annotations

import base64
import html as htmlmod
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from iopsim import cli
from iopsim.analysis.compare import nelson_matejcik
from iopsim.outputs.report import write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"
EVENING = REPO_ROOT / "scenarios" / "evening.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HORIZON = 90

COMMON_H2 = (
    "The answer",
    "The question",
    "The scenarios",
    "Headline results",
    "Staffing",
    "Groups",
    "Waiting lists and census over time",
    "The first year of a new site",
    "Levels of care",
    "Costs",
    "Methods (STRESS-DES)",
)
METHODS_H3 = ("1. Objectives", "2. Logic", "3. Data", "4. Experimentation", "5. Implementation", "6. Code access")


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """A finished run folder and a finished comparison folder (each made once)."""
    base = tmp_path_factory.mktemp("report_src")
    run_dir, cmp_dir = base / "run", base / "cmp"
    r = invoke("run", BASELINE, "--set", f"horizon_days={HORIZON}", "-n", "2", "--seed", "17", "--jobs", "1",
               "--warmup", "10", "--out", run_dir)
    assert r.exit_code == 0, f"iopsim run failed: {r.output!r} {r.exception!r}"
    c = invoke("compare", BASELINE, EVENING, "--set", f"horizon_days={HORIZON}", "-n", "2", "--seed", "17",
               "--jobs", "1", "--warmup", "auto", "--out", cmp_dir)
    assert c.exit_code == 0, f"iopsim compare failed: {c.output!r} {c.exception!r}"
    return {"run": run_dir, "compare": cmp_dir}


def regenerate(src: Path, dest: Path) -> tuple[Path, str]:
    """Copy a finished folder, delete its report, and rebuild it with `iopsim report COPY`."""
    shutil.copytree(src, dest)
    (dest / "report.html").unlink()
    r = invoke("report", dest)
    assert r.exit_code == 0, f"iopsim report {dest} exited {r.exit_code}: {r.output!r} {r.exception!r}"
    path = dest / "report.html"
    assert path.is_file(), "iopsim report did not write report.html"
    return path, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reports(finished, tmp_path_factory) -> dict[str, str]:
    where = tmp_path_factory.mktemp("report_copy")
    return {kind: regenerate(src, where / kind)[1] for kind, src in finished.items()}


def headings(html: str, level: int) -> list[str]:
    return [htmlmod.unescape(h).strip() for h in re.findall(rf"<h{level}>(.*?)</h{level}>", html, flags=re.S)]


def section(html: str, start: str, end: str | None = None) -> str:
    """The HTML from the h2 whose text starts with ``start`` up to the next h2."""
    m = re.search(rf"<h2>{re.escape(start)}.*?</h2>", html, flags=re.S)
    assert m, f"no section {start!r}"
    rest = html[m.end():]
    n = re.search(r"<h2>", rest)
    return rest[: n.start()] if n else rest


def visible_text(html: str) -> str:
    """Text a reader sees, minus code spans and the settings table (where raw names are intended)."""
    t = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    t = re.sub(r"<h3>What differs between them</h3>\s*<table>.*?</table>", "", t, flags=re.S)
    t = re.sub(r"<code>.*?</code>", "", t, flags=re.S)
    t = re.sub(r"<img [^>]*>", "", t)
    return htmlmod.unescape(re.sub(r"<[^>]+>", " ", t))


def cell_after(html: str, label: str) -> str:
    """The value in the cell after a row's label (without the CI printed under it)."""
    m = re.search(rf"<tr><td>{re.escape(label)}</td><td>(.*?)(?:<span class=\"ci\">.*?)?</td>", html)
    assert m, f"no table row labelled {label!r}"
    return htmlmod.unescape(m.group(1))


# --------------------------------------------------------------------------- the regenerated file


@pytest.mark.parametrize("kind", ["run", "compare"])
def test_regenerated_report_equals_the_original(finished, tmp_path, kind):
    """The report is a function of the folder's files only: rebuilt from a copy it is byte-identical."""
    path, _ = regenerate(finished[kind], tmp_path / "copy")
    original = (finished[kind] / "report.html").read_bytes()
    assert path.read_bytes() == original, f"{kind}: the report rebuilt from a copy differs from the original"


@pytest.mark.parametrize("kind", ["run", "compare"])
def test_report_is_one_self_contained_file(reports, finished, kind):
    html = reports[kind]
    assert html.count("<html") == 1 and html.rstrip().endswith("</html>"), f"{kind}: not one complete HTML document"
    fetched = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.I)
    assert not fetched, f"{kind}: the report fetches from the network: {fetched}"
    assert not re.search(r"<(?:link|script|iframe|object|embed)\b", html, flags=re.I), f"{kind}: external resource tag"
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//|@import", html, flags=re.I), f"{kind}: CSS fetches a resource"
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)
    imgs = re.findall(r"<img\b", html)
    assert len(srcs) == len(imgs) and srcs, f"{kind}: {len(imgs)} <img> tags but {len(srcs)} with a src"
    for s in srcs:
        assert s.startswith("data:image/png;base64,"), f"{kind}: image not embedded as PNG data: {s[:60]!r}"
        assert base64.b64decode(s.split(",", 1)[1]).startswith(PNG_MAGIC), f"{kind}: embedded image is not a PNG"


def test_every_figure_of_the_folder_is_embedded(reports, finished):
    run_html, cmp_html = reports["run"], reports["compare"]
    figs = sorted((finished["run"] / "figures").glob("*.png"))
    assert {p.name for p in figs} >= {"waitlist.png", "census.png", "funnel.png", "cost_breakdown.png",
                                      "group_census.png", "session_calendar.png", "staff_utilisation.png"}, \
        f"run figures: {[p.name for p in figs]}"
    for p in figs:
        assert base64.b64encode(p.read_bytes()).decode() in run_html, f"run report lacks figure {p.name}"
    wanted = [finished["compare"] / "figures" / f for f in ("forest.png", "waitlist_overlay.png", "census_overlay.png")]
    for name in ("baseline", "evening"):
        folder = finished["compare"] / "scenarios" / name / "figures"
        wanted += [folder / f for f in ("funnel.png", "cost_breakdown.png", "group_census.png",
                                        "session_calendar.png", "staff_utilisation.png")]
    for p in wanted:
        assert p.is_file(), f"compare folder lacks {p}"
        assert base64.b64encode(p.read_bytes()).decode() in cmp_html, f"compare report lacks figure {p}"


# --------------------------------------------------------------------------- sections


def test_run_report_sections(reports):
    html = reports["run"]
    h2 = headings(html, 2)
    for h in COMMON_H2:
        assert h in h2, f"run report lacks section {h!r}; has {h2}"
    assert [h for h in h2 if h in COMMON_H2] == list(COMMON_H2), f"run report sections out of order: {h2}"
    assert h2[:2] == ["The answer", "Warnings about the plan"], f"a run report opens with the answer, then warnings: {h2}"
    assert not any(h.startswith("Differences from") for h in h2), "a run report has no differences section"
    assert "What differs between them" not in headings(html, 3), "a run report has no 'what differs' table"
    h3 = headings(html, 3)
    methods = h3[h3.index("1. Objectives"):] if "1. Objectives" in h3 else []
    assert methods[:6] == list(METHODS_H3), f"STRESS-DES parts missing or out of order: {h3}"


def test_compare_report_sections(reports):
    html = reports["compare"]
    h2 = headings(html, 2)
    for h in COMMON_H2:
        assert h in h2, f"compare report lacks section {h!r}; has {h2}"
    assert "Differences from baseline" in h2, f"compare report lacks 'Differences from baseline': {h2}"
    assert h2[:2] == ["The answer", "Red flags"], f"a comparison opens with the verdict, then red flags: {h2}"
    assert h2.index("The scenarios") < h2.index("Differences from baseline") < h2.index("Headline results")
    h3 = headings(html, 3)
    assert "What differs between them" in h3, f"compare report lacks 'What differs between them': {h3}"
    assert h3[h3.index("1. Objectives"):][:6] == list(METHODS_H3), f"STRESS-DES parts missing or out of order: {h3}"
    differs = re.search(r"<h3>What differs between them</h3>\s*<table>(.*?)</table>", html, flags=re.S).group(1)
    for path in ("stages.iop.tracks.evening.groups", "staff.roles.counselor.teams.1.headcount"):
        assert f"<code>{path}</code>" in differs, f"the settings table lacks {path}"
    # Each scenario has its own block in the per-scenario sections.
    for name in ("Red flags", "Headline results", "Staffing", "Groups", "Levels of care", "Costs"):
        body = section(html, name)
        for scen in ("baseline", "evening"):
            assert f"<h3>{scen}</h3>" in body, f"section {name!r} has no block for {scen}"


def test_staffing_and_groups_sections_for_tracked_iop(reports):
    for kind, html in reports.items():
        staff = section(html, "Staffing")
        assert "How busy each staff role is" in staff and "<img src=\"data:image/png;base64," in staff, \
            f"{kind}: no utilisation figure in the staffing section"
        for header in ("Headcount", "Paid FTE", "Busy FTE", "FTE required", "Unmet hours a year", "Utilisation",
                       "Ratio rule"):
            assert f">{header}</th>" in staff, f"{kind}: staffing table lacks {header!r}"
        for role in ("Intake clinician", "Counselor", "Nurse"):
            assert f"<tr><td>{role}</td>" in staff, f"{kind}: staffing table has no row for {role}"
        assert "IOP at most 24 clients each" in staff, f"{kind}: the 1:24 ratio rule is not shown"
        groups = section(html, "Groups")
        assert len(re.findall(r"<img src=\"data:image/png;base64,", groups)) >= 2, f"{kind}: no group figures"
        for caption in ("How many clients attend a group session", "When group sessions are held"):
            assert caption in groups, f"{kind}: groups section lacks {caption!r}"
        for header in ("Mean group size", "Below minimum", "Cancelled", "Merged", "Referral to first session"):
            assert f">{header}</th>" in groups, f"{kind}: groups table lacks {header!r}"
        for track in ("Day", "Evening"):
            assert f"<tr><td>{track}</td>" in groups, f"{kind}: groups table has no row for the {track} track"


def test_run_report_opens_with_the_answer_in_words(reports, finished):
    html = reports["run"]
    answer = re.search(r'<section id="answer">(.*?)</section>', html, flags=re.S)
    assert answer and html.index('<section id="answer">') < html.index("<h2>The question</h2>"), "no answer first"
    text = " ".join(visible_text(answer.group(1)).split())
    assert re.search(r"With 1 intake clinician, 2 counselors and 1 nurse, and 2 IOP groups \(day and evening\), "
                     r"\d+ % \(\d+–\d+\) of referred patients are admitted to treatment within 14 days\.", text), text
    assert re.search(r"\d+ % \(\d+–\d+\) are lost before admission, about [\d.]+ \([\d.]+–[\d.]+\) a year", text), text
    assert re.search(r"a completed program costs \$[\d,]+ \(\$[\d,]+–\$[\d,]+\)", text), text
    assert re.search(r"90 % of those who stay attend a first group session within [\d.]+ days", text), text
    assert "IOP groups" in text and "below its minimum of 6" in text, text


def test_warnings_are_near_the_top_in_plain_words(reports, finished):
    html = reports["run"]
    man = json.loads((finished["run"] / "manifest.json").read_text())
    assert man["warnings"], "the tiny baseline run should have warnings (groups below their minimum size)"
    body = section(html, "Warnings about the plan")
    text = " ".join(visible_text(body).split())
    for w in man["warnings"]:
        field, message = w.split(": ", 1)
        assert f"<code>{field}</code>" in body, f"warning field {field} not shown"
        assert message[:40].lower() in text.lower(), f"warning {w!r} not in the warnings section: {text}"
    assert "IOP day track: minimum group size" in text, f"warnings should name the place in words: {text}"


def test_comparison_answer_is_a_verdict_with_directions(reports):
    html = reports["compare"]
    answer = re.search(r'<section id="answer">(.*?)</section>', html, flags=re.S).group(1)
    text = " ".join(visible_text(answer).split())
    assert re.search(r"evening (is better than|is worse than|and) baseline", text), text
    assert re.search(r"\d+ of the \d+ decisive measures", text), text
    diffs = section(html, "Differences from")
    verdicts = re.findall(r'<td class="(better|worse|same|neutral|none)">([^<]*)</td>', diffs)
    assert verdicts, "the differences table has no verdict cells"
    for css, word in verdicts:
        assert word in {"better": ("better",), "worse": ("worse",), "same": ("no significant difference",),
                        "neutral": ("higher", "lower"), "none": ("not comparable",)}[css], f"verdict {word!r} with colour class {css!r}"
    assert "lower is better" in diffs and "higher is better" in diffs, "directions are not shown"
    red = section(html, "Red flags")
    for scen in ("baseline", "evening"):
        assert f"<h3>{scen}</h3>" in red, f"no red flags block for {scen}"


def test_calibration_table_when_the_folder_has_calibration_csv(finished, tmp_path, reports):
    assert "How close to published figures" not in headings(reports["run"], 2), "no calibration.csv, no table"
    dest = tmp_path / "cal"
    shutil.copytree(finished["run"], dest)
    r = invoke("calibrate", "--check", dest, "--targets", REPO_ROOT / "calibration" / "targets.yaml")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(dest / "calibration.csv")
    html = write_report(dest).read_text(encoding="utf-8")
    body = section(html, "How close to published figures")
    assert f"{int(table['met'].sum())} of {len(table)} targets met" in visible_text(body), visible_text(body)[:300]
    for tid in table["id"]:
        assert f"<code>{tid}</code>" in body, f"target {tid} missing"
    assert len(re.findall(r'<td class="(met|missed)">', body)) == len(table)


# --------------------------------------------------------------------------- numbers and units


def test_numbers_carry_units(reports):
    for kind, html in reports.items():
        head = section(html, "Headline results")
        assert cell_after(head, "IOP: mean wait of those admitted").endswith(" days"), f"{kind}: mean wait without 'days'"
        total = cell_after(head, "Total cost")
        assert re.fullmatch(r"-?\$[\d,]+", total), f"{kind}: total cost not in $: {total!r}"
        assert re.fullmatch(r"-?[\d.]+ %", cell_after(head, "Labour share of total cost")), f"{kind}: share not in %"
        assert cell_after(head, "Referrals").endswith(" patients"), f"{kind}: referrals without unit"
        levels = section(html, "Levels of care")
        assert re.search(r"<td>[\d.,]+ days</td>", levels), f"{kind}: levels of care waits without 'days'"
        assert re.search(r"<td>[\d.]+ %</td>", levels), f"{kind}: occupancy without '%'"
        costs = section(html, "Costs")
        assert re.search(r"<td>-?\$[\d,]+</td>", costs), f"{kind}: costs without '$'"
        first = section(html, "The first year of a new site")
        assert re.search(r"<td>[\d.,]+ days</td>", first), f"{kind}: 'settles after' without 'days'"
    diffs = section(reports["compare"], "Differences from")
    row = re.search(r'<tr><td>Total cost<span class="dir">lower is better</span></td>(.*?)</tr>', diffs, flags=re.S)
    assert row, "differences table lacks the total cost row"
    cells = [htmlmod.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]
    assert all("$" in c for c in cells[:4]), f"total cost differences without '$': {cells}"
    assert cells[-1] in ("better", "worse", "no significant difference"), f"verdict in words: {cells}"


def test_seeds_replications_and_warmup_are_stated(reports, finished):
    for kind, html in reports.items():
        man = json.loads((finished[kind] / "manifest.json").read_text())
        text = " ".join(visible_text(html).split())
        assert f"Replications: {man['replications']};" in text and man["replications"] == 2, f"{kind}: replications"
        assert f"base seed {man['seed']}" in text and man["seed"] == 17, f"{kind}: seed not stated"
        assert f"mean over {man['replications']} replications" in text, f"{kind}: headline note lacks replications"
        assert f"warm-up discarded: {man['warmup_days']} days" in text, f"{kind}: warm-up not stated"
    man = json.loads((finished["run"] / "manifest.json").read_text())
    assert man["warmup_days"] == 10, f"--warmup 10 recorded as {man['warmup_days']}"
    cmp_text = " ".join(visible_text(reports["compare"]).split())
    assert "MSER-5" in cmp_text, "--warmup auto: the report does not say how the warm-up was estimated"
    assert "common random numbers" in cmp_text, "compare report does not mention common random numbers"


def _kpi_names(folder: Path) -> set[str]:
    cols = set()
    for f in folder.rglob("replications.csv"):
        cols |= set(pd.read_csv(f, nrows=0).columns)
    return {c for c in cols if "_" in c}  # single words ('referrals') are ordinary English


@pytest.mark.parametrize("kind", ["run", "compare"])
def test_no_raw_kpi_names_in_prose(reports, finished, kind):
    names = _kpi_names(finished[kind])
    assert "iop_admitted_wait_mean_days" in names, f"KPI names not found in {finished[kind]}"
    text = visible_text(reports[kind])
    leaked = sorted(n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", text))
    assert not leaked, f"{kind}: raw KPI field names outside code/settings tables: {leaked}"


# --------------------------------------------------------------------------- regressions


def test_selection_section_uses_the_kpi_label(finished, tmp_path):
    dest = tmp_path / "sel"
    shutil.copytree(finished["compare"], dest)
    per_rep = {n: pd.read_csv(dest / "scenarios" / n / "replications.csv") for n in ("baseline", "evening")}
    values = {n: t["cost_per_completed_program"].to_numpy(dtype=float) for n, t in per_rep.items()}
    sel = nelson_matejcik(values, 2, 1000.0, 0.05, "min", "cost_per_completed_program")
    (dest / "selection.json").write_text(json.dumps(sel.__dict__, default=float))
    html = write_report(dest).read_text(encoding="utf-8")
    body = section(html, "Which scenario is best?")
    assert "Cost per completed program" in body, "selection section does not name the KPI by its label"
    assert "cost_per_completed_program" not in visible_text(body), "selection section shows the raw KPI name"


def test_compare_methods_state_run_length_in_days(reports):
    text = " ".join(visible_text(section(reports["compare"], "Methods (STRESS-DES)")).split())
    assert f"Run length: {HORIZON} days" in text, f"run length not stated as a number of days: {text[text.find('Run length'):][:80]!r}"


# --------------------------------------------------------------------------- errors


def test_report_on_a_folder_without_manifest_is_one_error_line(tmp_path):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    (folder / "summary.csv").write_text("kpi,mean\n")
    r = invoke("report", folder)
    assert r.exit_code == 2, f"expected exit 2, got {r.exit_code}: {r.output!r}"
    assert "Traceback" not in r.stdout + r.stderr, "a traceback reached the user"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), f"expected one 'error:' line, got {r.stderr!r}"
    assert "manifest.json" in lines[0] and "not_a_run" in lines[0], f"error should name the folder and manifest: {lines[0]!r}"
    assert not (folder / "report.html").exists(), "a report was written for a folder without manifest"
