"""The ``iopsim`` command line: exit codes, one-line errors, and the run folder.

In-process tests use ``typer.testing.CliRunner`` on ``iopsim.cli.app``; a few run the
real console script in a subprocess (the ``iopsim`` next to the interpreter if
installed, else ``python cli.py`` from the checkout) to prove that no
traceback ever reaches the user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from iopsim import cli
from conftest import minimal_scenario_dict
from iopsim.schema.scenario import load_scenario

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"

RUN_FILES = (
    "manifest.json",
    "summary.csv",
    "summary.json",
    "replications.csv",
    "records.parquet",
    "episodes.parquet",
    "levels.parquet",
    "scenario.yaml",
    "figures/waitlist.png",
    "figures/census.png",
    "figures/funnel.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- helpers


def iopsim_command() -> list[str]:
    """The installed console script beside this interpreter, else an equivalent ``-c``."""
    script = Path(sys.executable).with_name("iopsim")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, str(REPO_ROOT / "cli.py")]


def run_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "CLICOLOR_FORCE")}
    env["COLUMNS"] = "60"  # narrower than the error messages: they must still be one line
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [*iopsim_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def invoke(*args: str):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def assert_one_error_line(exit_code: int, stdout: str, stderr: str, *fragments: str) -> None:
    """Exit code 2; stderr is exactly one non-empty ``error:`` line with every fragment; no traceback."""
    assert exit_code == 2, f"expected exit code 2, got {exit_code}; stderr={stderr!r} stdout={stdout!r}"
    assert "Traceback" not in stdout + stderr, f"a traceback reached the user: {stdout + stderr!r}"
    lines = stderr.splitlines()
    assert len(lines) == 1, f"stderr should be exactly one line, got {len(lines)}: {stderr!r}"
    line = lines[0]
    assert line.startswith("error:") and line[len("error:"):].strip(), f"expected 'error: <message>', got {line!r}"
    for fragment in fragments:
        assert fragment in line, f"expected {fragment!r} in the error line {line!r}"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_scenario(tmp_scenario, name: str = "tiny.yaml") -> Path:
    data = minimal_scenario_dict()
    data.update(name="tiny", horizon_days=40, replications=2)
    return tmp_scenario(data, name=name)


# --------------------------------------------------------------------------- bad input (in process)


def _unknown_field(ts):
    d = minimal_scenario_dict()
    d["stages"]["iop"]["los_day"] = 3
    return ts(d, name="unknown_field.yaml"), [], ("unknown_field.yaml", "stages.iop", "los_day", "allowed:")


def _bad_step_down(ts):
    d = minimal_scenario_dict()
    d["stages"]["iop"]["step_down"] = {"aftercare": 1.0}
    return ts(d, name="step_down.yaml"), [], ("step_down.yaml", "stages.iop.step_down.aftercare", "switched off")


def _malformed(ts):
    return ts("name: x\nstages: {iop: [1, 2}\n", name="malformed.yaml"), [], ("malformed.yaml", "line 2")


def _circular(ts):
    ts({"extends": "circ_b.yaml"}, name="circ_a.yaml")
    return ts({"extends": "circ_a.yaml"}, name="circ_b.yaml"), [], ("circ_b.yaml", "extends", "circular")


def _missing(ts):
    return ts(name="placeholder.yaml").with_name("does_not_exist.yaml"), [], ("does_not_exist.yaml", "file not found")


def _bad_set(ts):
    return ts(name="good.yaml"), ["--set", "horizon_days"], ("good.yaml", "--set horizon_days", "dotted.path=value")


def _set_unknown(ts):
    return ts(name="good.yaml"), ["--set", "stages.iop.bogus=1"], ("good.yaml", "stages.iop", "bogus", "allowed:")


def _warmup(ts):
    return ts(name="good.yaml"), ["--set", "warmup_days=500"], ("good.yaml", "warmup_days", "less than horizon_days")


BAD_INPUTS = {
    "unknown-field": _unknown_field,
    "step-down-off": _bad_step_down,
    "malformed-yaml": _malformed,
    "circular-extends": _circular,
    "missing-file": _missing,
    "set-without-equals": _bad_set,
    "set-unknown-field": _set_unknown,
    "warmup-too-long": _warmup,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_validate_bad_input_is_one_error_line(tmp_scenario, case):
    path, extra, fragments = BAD_INPUTS[case](tmp_scenario)
    result = invoke("validate", path, *extra)
    assert_one_error_line(result.exit_code, result.stdout, result.stderr, *fragments)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_run_bad_input_is_one_error_line_and_writes_nothing(tmp_scenario, tmp_path, monkeypatch, case):
    path, extra, fragments = BAD_INPUTS[case](tmp_scenario)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    dest = tmp_path / "new_run"
    result = invoke("run", path, *extra, "--jobs", "1", "-n", "1", "--out", dest)
    assert_one_error_line(result.exit_code, result.stdout, result.stderr, *fragments)
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before, f"a failed run changed {tmp_path}: before {before}, after {after}"


def test_run_bad_input_without_out_creates_no_outputs_folder(tmp_scenario, tmp_path, monkeypatch):
    path, extra, _ = _unknown_field(tmp_scenario)
    monkeypatch.chdir(tmp_path)
    result = invoke("run", path, "--jobs", "1", "-n", "1")
    assert result.exit_code == 2, f"expected exit 2, got {result.exit_code}: {result.stderr!r}"
    assert not (tmp_path / "outputs").exists(), "a run that failed validation created outputs/"


def test_error_line_keeps_square_brackets_of_the_file_name(tmp_scenario):
    """Regression: the error used to be printed as Rich markup, so '[draft]' vanished from the file name."""
    d = minimal_scenario_dict()
    d["bogus"] = 1
    path = tmp_scenario(d, name="[draft]site.yaml")
    result = invoke("validate", path)
    assert_one_error_line(result.exit_code, result.stdout, result.stderr, "[draft]site.yaml", "bogus")


# --------------------------------------------------------------------------- good input (in process)


def test_validate_good_file_exits_0(tmp_scenario):
    path = tmp_scenario()
    result = invoke("validate", path)
    assert result.exit_code == 0, f"validate of a good file exited {result.exit_code}: {result.output!r}"


def test_validate_good_file_prints_a_verdict(tmp_scenario):
    result = invoke("validate", tmp_scenario())
    assert "valid scenario 'minimal'" in result.stdout, f"unexpected verdict: {result.stdout!r}"


def test_validate_accepts_set(tmp_scenario):
    result = invoke("validate", tmp_scenario(), "--set", "horizon_days=365")
    verdict = " ".join(result.stdout.split())  # one-line-ness is checked separately below
    assert result.exit_code == 0 and "horizon 365 days" in verdict, f"got {result.exit_code}: {result.output!r}"


def test_validate_verdict_is_one_line_even_for_a_long_path(tmp_scenario):
    """Regression: the verdict used to be wrapped by Rich on a non-terminal stdout."""
    path = tmp_scenario(name="a_rather_long_scenario_file_name_" + "x" * 100 + ".yaml")
    result = invoke("validate", path)
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 1, f"verdict spans {len(lines)} lines: {result.stdout!r}"


def test_validate_shipped_baseline_exits_0():
    result = invoke("validate", BASELINE)
    assert result.exit_code == 0, f"validate baseline exited {result.exit_code}: {result.output!r}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run (2 replications, 40 days, --jobs 1) shared by the run-folder tests."""
    base = tmp_path_factory.mktemp("run")
    data = minimal_scenario_dict()
    data.update(name="tiny", horizon_days=40, replications=2)
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    dest = base / "runs" / "tiny-run"
    cwd = os.getcwd()
    os.chdir(base)
    try:
        result = invoke("run", path, "-n", "2", "--seed", "7", "--jobs", "1", "--out", dest)
    finally:
        os.chdir(cwd)
    return result, dest, path


def test_run_exits_0(finished_run):
    result, _, _ = finished_run
    assert result.exit_code == 0, f"run exited {result.exit_code}: {result.output!r} {result.exception!r}"


@pytest.mark.parametrize("name", RUN_FILES)
def test_run_writes_file(finished_run, name):
    _, dest, _ = finished_run
    has = sorted(snapshot(dest)) if dest.exists() else "no folder at all"
    assert (dest / name).is_file(), f"run folder lacks {name}; has {has}"


@pytest.mark.parametrize("name", [n for n in RUN_FILES if n.endswith(".png")])
def test_run_figures_are_png(finished_run, name):
    _, dest, _ = finished_run
    assert (dest / name).read_bytes()[:8] == PNG_MAGIC, f"{name} is not a PNG file"


@pytest.mark.parametrize("name", [n for n in RUN_FILES if n.endswith(".parquet")])
def test_run_parquet_tables_are_readable(finished_run, name):
    _, dest, _ = finished_run
    df = pd.read_parquet(dest / name)
    assert "replication" in df.columns, f"{name} has no replication column: {list(df.columns)}"


def test_run_manifest_records_the_run(finished_run):
    _, dest, _ = finished_run
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    got = {k: manifest.get(k) for k in ("scenario", "seed", "replications")}
    assert got == {"scenario": "tiny", "seed": 7, "replications": 2}, f"manifest.json records {got}"


def test_run_replications_table_has_one_row_per_replication(finished_run):
    _, dest, _ = finished_run
    reps = pd.read_csv(dest / "replications.csv")
    assert sorted(reps["replication"]) == [0, 1], f"replications.csv rows: {reps['replication'].tolist()}"


def test_run_summary_is_not_empty(finished_run):
    _, dest, _ = finished_run
    summary = pd.read_csv(dest / "summary.csv")
    assert len(summary) > 0 and "mean" in summary.columns, f"summary.csv is empty or lacks means: {summary.columns}"


def test_run_scenario_yaml_is_the_resolved_scenario(finished_run):
    _, dest, path = finished_run
    assert load_scenario(dest / "scenario.yaml") == load_scenario(path), "scenario.yaml differs from the input"


def test_run_leaves_no_partial_folder(finished_run):
    _, dest, _ = finished_run
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.endswith(".partial")]
    assert leftovers == [], f"staging folders left behind: {leftovers}"


def test_run_into_existing_non_empty_folder_fails_and_keeps_files(tmp_scenario, tmp_path):
    path = tiny_scenario(tmp_scenario)
    dest = tmp_path / "previous_run"
    (dest / "figures").mkdir(parents=True)
    (dest / "summary.csv").write_bytes(b"kpi,mean\nreferrals,41\n")
    (dest / "figures" / "census.png").write_bytes(PNG_MAGIC + b"old")
    before, siblings = snapshot(dest), sorted(p.name for p in tmp_path.iterdir())
    result = invoke("run", path, "-n", "1", "--jobs", "1", "--out", dest)
    assert result.exit_code == 2, f"expected exit 2, got {result.exit_code}: {result.output!r}"
    assert snapshot(dest) == before, "the existing run folder was modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings, "a staging folder was left beside --out"


def test_run_into_existing_non_empty_folder_error_is_one_line(tmp_scenario, tmp_path):
    """Regression: the progress bar used to print a blank stderr line before this error."""
    path = tiny_scenario(tmp_scenario)
    dest = tmp_path / "previous_run"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep", encoding="utf-8")
    result = invoke("run", path, "-n", "1", "--jobs", "1", "--out", dest)
    assert_one_error_line(result.exit_code, result.stdout, result.stderr, "previous_run", "not empty")


# --------------------------------------------------------------------------- the real console script


def test_console_script_bad_input_is_one_error_line(tmp_scenario, tmp_path):
    path, extra, fragments = _unknown_field(tmp_scenario)
    proc = run_subprocess(["validate", str(path), *extra], cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, *fragments)


def test_console_script_bad_set_is_one_error_line(tmp_scenario, tmp_path):
    path = tmp_scenario()
    proc = run_subprocess(["validate", str(path), "--set", "referrals.sources.community.share=2"], cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, path.name,
                          "referrals.sources.community.share", "less than or equal to 1")


def test_console_script_validate_good_file_exits_0(tmp_scenario, tmp_path):
    proc = run_subprocess(["validate", str(tmp_scenario())], cwd=tmp_path)
    assert proc.returncode == 0, f"validate exited {proc.returncode}: {proc.stderr!r}"


def test_console_script_run_bad_input_writes_nothing(tmp_scenario, tmp_path):
    path, _, fragments = _bad_step_down(tmp_scenario)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["run", str(path), "--jobs", "1", "-n", "1", "--out", str(tmp_path / "new_run")]
    proc = run_subprocess(args, cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, *fragments)
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before, f"a run that failed validation wrote {set(after) - set(before)}"


def test_the_program_ends_with_its_commands_status_and_all_its_output(tmp_path):
    """``iopsim`` ends the process without tearing down the interpreter (``cli.entry``): the
    output written to a file or pipe is complete, exit handlers run, and the status is the command's."""
    handler = tmp_path / "exit_handler_ran"
    script = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(pathlib.Path({str(handler)!r}).write_text, 'yes')\n"
        "from iopsim.cli import entry\n"
        "sys.argv = ['iopsim', *sys.argv[1:]]\n"
        "entry()\n"
    )
    out_file = tmp_path / "out.txt"
    with out_file.open("w") as fh:
        ok = subprocess.run([sys.executable, "-c", script, "validate", str(BASELINE)], stdout=fh,
                            stderr=subprocess.PIPE, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    text = out_file.read_text()
    assert "valid scenario 'baseline'" in text and text.endswith("\n"), text
    assert handler.read_text() == "yes"
    bad = subprocess.run([sys.executable, "-c", script, "validate", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert_one_error_line(bad.returncode, bad.stdout, bad.stderr, "missing.yaml", "not found")
    usage = subprocess.run([sys.executable, "-c", script, "run"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
