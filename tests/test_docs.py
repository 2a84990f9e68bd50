"""The documentation: the site builds cleanly, the scenario reference covers the schema, the README is true.

* ``mkdocs build --strict`` passes (no warning: no broken link or anchor, no
  page left out of the navigation, the API reference finds ``iopsim``).
* The generated scenario reference names every field of the schema, walked
  here independently of the generator, with its default, its allowed values
  and a description.
* README.md is short, shows only real ``iopsim`` commands (and all of them),
  and every relative link in it points at a file that exists (and, into the
  docs, at an anchor that exists).
* The KPI reference (``docs/reference/outputs.md``) defines every KPI that a
  run of the baseline produces, stage, track, role and activity names read
  as the placeholders ``<stage>``, ``<track>``, ``<role>`` and ``<activity>``.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer
import yaml
from pydantic import BaseModel

import iopsim
from iopsim import cli
from iopsim.schema.distributions import Distribution
from iopsim.schema.reference import markdown_reference
from iopsim.schema.scenario import Scenario, Stage, Track

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MAX_README_LINES = 250


# --------------------------------------------------------------------------- the site


def _mkdocs() -> list[str]:
    """The ``mkdocs`` console script next to this interpreter (what a user runs), else ``python -m mkdocs``."""
    script = Path(sys.executable).with_name("mkdocs")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mkdocs"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once with ``mkdocs build --strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [*_mkdocs(), "build", "--strict", "--config-file", str(REPO_ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed (exit {proc.returncode}):\n{log[-4000:]}"
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "mkdocs build printed warnings:\n" + "\n".join(warnings)
    return out


def _ids(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


def test_mkdocs_build_strict_passes(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    for expected in ("index.html", "getting-started/index.html", "model/index.html", "architecture/index.html",
                     "reference/scenario/index.html", "reference/api/index.html", "validation/index.html",
                     "data-sources/index.html"):
        assert expected in pages, f"page {expected} missing from the built site; built: {pages}"


def test_built_scenario_reference_holds_the_generated_tables(site):
    page = site / "reference" / "scenario" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "<!-- scenario-reference -->" not in text, "the marker was not replaced by the generated reference"
    ids = _ids(page)
    for anchor in ("ref-top-level", "ref-stages-stage", "ref-stages-stage-tracks-track", "ref-distributions"):
        assert anchor in ids, f"generated section #{anchor} missing from the built scenario reference"
    assert "<code>los_days</code>" in text and "<code>cohort_start_every_weeks</code>" in text


def test_built_scenario_files_page_lists_every_input_limit(site):
    """The table of input limits is generated from ``DEFAULTS``: every limit, its variable and its default."""
    from iopsim.schema.limits import DEFAULTS

    page = site / "reference" / "scenario-files" / "index.html"
    text = html.unescape(page.read_text(encoding="utf-8"))
    assert "<!-- input-limits -->" not in text, "the marker was not replaced by the table of input limits"
    assert "input-limits" in _ids(page), "section #input-limits missing from the scenario files page"
    for name, (default, what) in DEFAULTS.items():
        shown = f"{int(default):,}" if float(default).is_integer() else f"{default:g}"
        row = re.search(rf"<td><code>{name}</code></td>\s*<td><code>IOPSIM_LIMIT_{name.upper()}</code></td>"
                        rf"\s*<td>{re.escape(shown)}</td>\s*<td>{re.escape(what)}</td>", text)
        assert row, f"limit {name} (default {shown}) missing from the table of input limits"


def test_built_api_reference_documents_the_public_api(site):
    ids = _ids(site / "reference" / "api" / "index.html")
    for name in ("load_scenario", "run", "compare", "sweep", "sensitivity", "report", "calibrate", "scenario_schema",
                 "Results", "Comparison", "SweepResults"):
        assert f"iopsim.api.{name}" in ids, f"the API reference does not document iopsim.{name}"


# --------------------------------------------------------------------------- the scenario reference


def _unwrap(ann):
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _models_in(ann) -> list[tuple[str, type[BaseModel]]]:
    """``(kind, model)`` for the scenario models a field holds: ``model``, ``mapping`` or ``list``."""
    ann = _unwrap(ann)
    if typing.get_origin(ann) in (typing.Union, type(int | None)):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) != 1:
            return []  # a distribution (tagged union) or a choice of plain types
        ann = _unwrap(args[0])
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [("model", ann)]
    if typing.get_origin(ann) is dict:
        value = _unwrap(typing.get_args(ann)[1])
        return [("mapping", value)] if isinstance(value, type) and issubclass(value, BaseModel) else []
    if typing.get_origin(ann) is list:
        item = _unwrap(typing.get_args(ann)[0])
        return [("list", item)] if isinstance(item, type) and issubclass(item, BaseModel) else []
    return []


def schema_fields(model: type[BaseModel] = Scenario, prefix: str = ""):
    """Every ``(section path, field name, FieldInfo)`` of the scenario schema, depth first.

    The path conventions the reference promises: ``<singular>`` for the keys of
    a mapping (``referrals.sources.<source>``), ``[]`` for list items, and one
    ``<singular>`` section for sibling fields of one model (``stages.<stage>``).
    """
    children = []
    kinds = [k for info in model.model_fields.values() for k in _models_in(info.annotation)]
    shared = {m for kind, m in kinds if kind == "model" and sum(1 for _, n in kinds if n is m) > 1}
    for name, info in model.model_fields.items():
        key = info.alias or name
        yield prefix, key, info
        path = f"{prefix}.{key}" if prefix else key
        for kind, sub in _models_in(info.annotation):
            if sub in shared:
                sub_prefix = f"{prefix}.<{prefix.rsplit('.', 1)[-1].removesuffix('s')}>"
            elif kind == "model":
                sub_prefix = path
            elif kind == "mapping":
                sub_prefix = f"{path}.<{key.removesuffix('s')}>"
            else:
                sub_prefix = f"{path}[]"
            if sub_prefix not in [c[0] for c in children]:
                children.append((sub_prefix, sub))
    for sub_prefix, sub in children:
        yield from schema_fields(sub, sub_prefix)


def reference_tables(text: str) -> dict[str, dict[str, list[str]]]:
    """Section path -> field name -> the row's cells (type, unit, default, description)."""
    tables: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.splitlines():
        head = re.match(r"#{2,3} (.+?) \{#[\w-]+\}$", line)
        if head:
            title = head.group(1)
            section = "" if title == "Top level" else title.strip("`")
            tables.setdefault(section, {})
            continue
        row = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
        if row and section is not None:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.group(2))]
            tables[section][row.group(1)] = cells
    return tables


@pytest.fixture(scope="module")
def tables() -> dict[str, dict[str, list[str]]]:
    return reference_tables(markdown_reference())


def _check_default(cell: str, info, where: str) -> None:
    if info.is_required():
        assert cell == "required", f"{where}: a required field, but the reference gives the default {cell!r}"
        return
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        assert "default" in cell, f"{where}: a section of defaults, but the reference says {cell!r}"
        return
    assert cell.startswith("`") and cell.endswith("`"), f"{where}: default {cell!r} is not a code value"
    shown = yaml.safe_load(cell.strip("`"))
    assert shown == value, f"{where}: the reference shows the default {shown!r}, the schema has {value!r}"


def test_reference_lists_every_schema_field_with_its_default(tables):
    checked = 0
    for section, key, info in schema_fields():
        where = f"{section}.{key}" if section else key
        assert section in tables, f"no section `{section}` in the scenario reference (for {where})"
        assert key in tables[section], f"field {where} is missing from the scenario reference section `{section}`"
        _check_default(tables[section][key][2], info, where)
        checked += 1
    assert checked > 100, f"only {checked} fields walked: the walk of the schema is broken"
    assert "extends" in tables[""], "the top level of the reference does not describe `extends`"


def test_reference_covers_top_level_stage_and_track_fields(tables):
    """A direct check on the models readers look up most, independent of the walk."""
    for section, model in (("", Scenario), ("stages.<stage>", Stage), ("stages.<stage>.tracks.<track>", Track)):
        for name, info in model.model_fields.items():
            key = info.alias or name
            assert key in tables.get(section, {}), f"{model.__name__}.{key} missing from section `{section}`"
            _check_default(tables[section][key][2], info, f"{section}.{key}")


def test_reference_gives_allowed_values_and_bounds(tables):
    for section, key, info in schema_fields():
        type_cell = tables[section][key][0]
        ann = _unwrap(info.annotation)
        if typing.get_origin(ann) is typing.Literal:
            for value in typing.get_args(ann):
                assert f"`{value}`" in type_cell, f"{section}.{key}: allowed value {value!r} not in {type_cell!r}"
        for bound in info.metadata:
            for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
                if hasattr(bound, attr):
                    number = f"{getattr(bound, attr):g}"
                    assert number in type_cell and (symbol in type_cell or "≤" in type_cell), (
                        f"{section}.{key}: bound {attr}={number} not shown in {type_cell!r}")


def test_every_schema_field_has_a_description(tables):
    """A field without a docstring would appear in the reference with nothing to say."""
    missing = [f"{s}.{k}" if s else k for s, k, info in schema_fields() if not (info.description or "").strip()]
    assert not missing, f"schema fields without a description (add a docstring under each): {missing}"
    for section, rows in tables.items():
        for key, cells in rows.items():
            assert cells[3], f"{section}.{key}: empty description in the reference"


def test_reference_describes_every_distribution_family(tables):
    union = _unwrap(Distribution)
    for family in typing.get_args(union):
        tag = typing.get_args(family.model_fields["dist"].annotation)[0]
        section = f"dist: {tag}"
        assert section in tables, f"distribution family {tag!r} missing from the reference"
        for name, info in family.model_fields.items():
            key = info.alias or name
            assert key in tables[section], f"parameter {key!r} of {tag!r} missing from the reference"
            assert (info.description or "").strip(), f"parameter {key!r} of {tag!r} has no description"


def test_reference_parser_catches_a_missing_field():
    """The checks above can fail: drop one row from the reference and it is noticed."""
    text = markdown_reference()
    lines = [ln for ln in text.splitlines() if not ln.startswith("| `los_days` |")]
    broken = reference_tables("\n".join(lines))
    assert "los_days" not in broken["stages.<stage>"]
    assert "capacity" in broken["stages.<stage>"]


# --------------------------------------------------------------------------- the README


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _code(text: str) -> list[str]:
    """The README's code: fenced blocks and inline code spans."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    outside = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return fenced + re.findall(r"`([^`\n]+)`", outside)


def shown_commands(text: str) -> set[str]:
    """Every ``iopsim COMMAND`` the text shows in code (options such as ``-v`` before it skipped)."""
    found = set()
    for code in _code(text):
        for m in re.finditer(r"(?<![\w.\-/\[])iopsim(?:[ \t]+-{1,2}[\w-]+)*[ \t]+([a-z][\w-]*)", code):
            found.add(m.group(1))
    return found


def cli_commands() -> set[str]:
    return set(typer.main.get_command(cli.app).commands)


def relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images that are not web addresses or in-page anchors."""
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_short():
    n = len(_readme().splitlines())
    assert n < MAX_README_LINES, f"README.md has {n} lines; keep it under {MAX_README_LINES} and move detail into docs/"


def test_readme_shows_only_real_commands_and_all_of_them():
    real = cli_commands()
    shown = shown_commands(_readme())
    assert shown, "the README shows no iopsim command at all"
    unknown = shown - real
    assert not unknown, f"the README shows iopsim commands that do not exist: {sorted(unknown)}; real: {sorted(real)}"
    missing = real - shown
    assert not missing, f"the README's command table leaves out: {sorted(missing)}"


def test_readme_command_check_can_fail():
    assert shown_commands("Run `iopsim simulate x.yaml` or\n```sh\niopsim -v run a.yaml\n```\n") == {"simulate", "run"}
    assert shown_commands("`pip install 'iopsim[cluster]'` and `import iopsim`\n") == set()


def test_readme_test_command_is_the_one_ci_runs():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in ci
    assert "pip install -e '.[test]' && python -m pytest -q" in _readme(), "the README must show the CI's test command"


def test_readme_relative_links_resolve(site):
    links = relative_links(_readme())
    assert links, "no relative links found in README.md"
    for target in links:
        path, _, anchor = target.partition("#")
        file = (REPO_ROOT / path).resolve()
        assert file.exists(), f"README.md links to {target}, which does not exist"
        if anchor and path.startswith("docs/") and path.endswith(".md"):
            rel = Path(path).relative_to("docs").with_suffix("")
            page = site / ("index.html" if rel.name == "index" else rel / "index.html")
            assert anchor in _ids(page), f"README.md links to {target}, but the page has no anchor #{anchor}"


def test_link_check_can_fail():
    assert relative_links("[a](docs/nowhere.md) [b](https://example.org) [c](#top) ![d](docs/images/x.png)") == [
        "docs/nowhere.md", "docs/images/x.png"]
    assert not (REPO_ROOT / "docs/nowhere.md").exists()


def test_readme_picture_is_the_report_and_small():
    picture = REPO_ROOT / "docs" / "images" / "report.png"
    assert "docs/images/report.png" in _readme()
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "docs/images/report.png is not a PNG"
    assert picture.stat().st_size < 400_000, "keep the report picture under 400 KB"


def test_docs_say_nothing_about_this_machine():
    """Pages are for users anywhere: no absolute paths of a particular checkout."""
    for page in [README, *sorted((REPO_ROOT / "docs").rglob("*.md"))]:
        text = html.unescape(page.read_text(encoding="utf-8"))
        for pattern in (r"(?<![\w.])/tmp/", r"(?<![\w.])/work/", r"(?<![\w.])/home/\w+"):
            assert not re.search(pattern, text), f"{page.relative_to(REPO_ROOT)} mentions a local path ({pattern})"


# --------------------------------------------------------------------------- the KPI reference

OUTPUTS = REPO_ROOT / "docs" / "reference" / "outputs.md"


def kpi_reference_names(text: str) -> list[str]:
    """The KPI names the KPI tables of the outputs page define, with placeholders (``<stage>_census_mean``).

    A row may abbreviate: ```<stage>_waitlist_mean`, `_waitlist_max``` defines
    ``<stage>_waitlist_max`` too. A name starting with ``_`` is read as the
    first name of its row with a tail replaced, so every such reading is kept.
    """
    section = ("\n" + text).split("\n## KPIs", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ", 1)[0]
        spans = re.findall(r"`([^`]+)`", first_cell)
        full = spans[0]
        for span in spans:
            if not span.startswith("_"):
                names.append(span)
                full = span
            else:
                names += [full[:i] + span for i, ch in enumerate(full) if ch == "_"]
    return names


def kpi_patterns(names: list[str], scenario) -> list[re.Pattern]:
    """Each documented name as a regular expression, its placeholders standing for the scenario's names."""
    stages = ["intake", *scenario.stages.enabled()]
    tracks = list(scenario.stages.iop.tracks) if scenario.stages.iop is not None and scenario.stages.iop.tracks else []
    roles = [*(scenario.staff.roles if scenario.staff is not None else {}), "intake_clinician"]
    services = list(scenario.stages.iop.services) if scenario.stages.iop is not None else []
    from iopsim.analysis.kpis import STAY_OUTCOMES
    from iopsim.schema.scenario import BILLING_UNITS

    words = {"<stage>": stages, "<track>": tracks, "<role>": roles, "<activity>": ["intake", "group", *services],
             "<payer>": list(scenario.payers), "<unit>": list(BILLING_UNITS),
             "<outcome>": list(STAY_OUTCOMES)}
    patterns = []
    for name in names:
        rx = re.escape(name)
        for placeholder, values in words.items():
            rx = rx.replace(re.escape(placeholder), "(?:" + "|".join(map(re.escape, values)) + ")")
        patterns.append(re.compile(rx))
    return patterns


def undocumented(kpis, patterns: list[re.Pattern]) -> list[str]:
    return [k for k in kpis if not any(p.fullmatch(k) for p in patterns)]


@pytest.fixture(scope="module")
def baseline_kpis():
    scenario = iopsim.load_scenario(REPO_ROOT / "scenarios" / "baseline.yaml", {"horizon_days": 60})
    results = iopsim.run(scenario, replications=1)
    return scenario, list(results.summary["kpi"])


def test_kpi_reference_documents_every_kpi_of_a_baseline_run(baseline_kpis):
    scenario, kpis = baseline_kpis
    assert len(kpis) > 150, f"only {len(kpis)} KPIs: the baseline run is not what this test expects"
    names = kpi_reference_names(OUTPUTS.read_text(encoding="utf-8"))
    missing = undocumented(kpis, kpi_patterns(names, scenario))
    assert not missing, f"KPIs a baseline run produces that docs/reference/outputs.md does not define: {missing}"


def test_kpi_reference_check_can_fail(baseline_kpis):
    """Drop the rows of the planned-stay KPIs, or invent a KPI, and the check notices."""
    scenario, kpis = baseline_kpis
    text = OUTPUTS.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("| `<stage>_planned_stay_mean_days")]
    patterns = kpi_patterns(kpi_reference_names("\n".join(lines)), scenario)
    missing = undocumented(kpis, patterns)
    assert "iop_planned_stay_mean_days" in missing and "residential_planned_stay_mean_days_completed" in missing
    full = kpi_patterns(kpi_reference_names(text), scenario)
    assert undocumented(["iop_share_lost_on_mondays", "iop_track_night_admissions"], full) == [
        "iop_share_lost_on_mondays", "iop_track_night_admissions"]
    assert kpi_reference_names("## KPIs\n| `<stage>_waitlist_mean`, `_waitlist_max` | patients | x |\n## Next") == [
        "<stage>_waitlist_mean", "<stage>_waitlist_max", "<stage>_waitlist_waitlist_max"]
