"""Hostile input, exhausted resources and signals: every failure is one clear line.

One test (or more) per class of failure: YAML that expands without bound or
nests too deeply, duplicate keys, special files, magnitudes that validate and
then hang, names and folders that would escape or collide, damaged run folders,
malformed scheduler addresses, SIGTERM and SIGKILL.  A property-based test
corrupts valid documents at random and checks that loading either succeeds or
fails with one line, quickly.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import iopsim
from conftest import minimal_scenario_dict
from iopsim import cli
from iopsim.errors import IopsimError, ScenarioError
from iopsim.files import RunFolder, safe_name
from iopsim.schema.scenario import load_scenario, validate_raw

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli.app, [str(a) for a in args], **kwargs)


def one_line_exit_2(result) -> str:
    text = (result.stdout + (result.stderr or "")).strip()
    assert result.exit_code == 2, f"exit {result.exit_code}: {text!r}"
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, f"expected one error line: {text!r}"
    return errors[0]


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- YAML bounds

LAUGHS = "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                   + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
                   + ["name: laughs"])


def test_billion_laughs_is_refused_quickly(tmp_path):
    path = write(tmp_path, LAUGHS)
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    assert time.perf_counter() - t0 < 5, "the alias bomb must not be expanded"
    assert "expands to more than" in str(exc.value) and "IOPSIM_LIMIT_YAML_NODES" in str(exc.value)
    r = invoke("validate", path)
    assert "expands to more than" in one_line_exit_2(r)


def test_deep_nesting_is_one_line(tmp_path):
    path = write(tmp_path, "name: x\nreferrals: " + "[" * 20_000 + "]" * 20_000 + "\n")
    r = invoke("validate", path)
    assert "nested" in one_line_exit_2(r)


def test_duplicate_keys_are_an_error(tmp_path):
    d = minimal_scenario_dict()
    text = yaml.safe_dump(d, sort_keys=False).replace("horizon_days: 100", "horizon_days: 100\nhorizon_days: 50")
    assert text.count("horizon_days") == 2
    with pytest.raises(ScenarioError, match="duplicate key 'horizon_days'"):
        load_scenario(write(tmp_path, text))


def test_file_size_is_bounded_and_the_limit_can_be_raised(tmp_path, monkeypatch):
    d = minimal_scenario_dict()
    d["description"] = "x" * 2_100_000
    path = write(tmp_path, yaml.safe_dump(d))
    with pytest.raises(ScenarioError, match="above the limit"):
        load_scenario(path)
    monkeypatch.setenv("IOPSIM_LIMIT_FILE_BYTES", "5000000")
    assert load_scenario(path).description.startswith("xxx")


def test_extends_a_device_or_a_pipe_is_refused_without_blocking(tmp_path):
    d = minimal_scenario_dict()
    d["extends"] = "/dev/zero"
    with pytest.raises(ScenarioError, match="extends: not a regular file"):
        load_scenario(write(tmp_path, yaml.safe_dump(d)))
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    d["extends"] = "pipe.yaml"
    path = write(tmp_path, yaml.safe_dump(d), "child.yaml")
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("r", _catch(lambda: load_scenario(path))), daemon=True)
    th.start()
    th.join(10)
    assert not th.is_alive(), "reading a named pipe blocked"
    assert isinstance(box["r"], ScenarioError) and "not a regular file" in str(box["r"])
    with pytest.raises(ScenarioError, match="not a regular file"):
        load_scenario(fifo)


def _catch(fn):
    try:
        return fn()
    except Exception as exc:  # the test inspects it
        return exc


# --------------------------------------------------------------------------- magnitudes


@pytest.mark.parametrize("override,field", [
    ({"horizon_days": 10_000_000}, "horizon_days"),
    ({"referrals.referrals_per_week": 1e308}, "referrals.referrals_per_week"),
    ({"start_state.intake_waitlist": 1_000_000_000}, "start_state.intake_waitlist"),
    ({"stages.php.los_days": {"dist": "gamma", "mean": 1e-300, "sd": 1e300}}, "stages.php.los_days.mean"),
    ({"stages.php.los_days": {"dist": "gamma", "mean": 1.0, "sd": 1e6}}, "stages.php.los_days.sd"),
    ({"stages.php.los_days": {"dist": "lognormal", "median": 5, "sigma": 50}}, "stages.php.los_days.sigma"),
    ({"staff.roles.counselor.teams.0.headcount": 10**9}, "staff.roles.counselor.teams.0.headcount"),
    ({"replications": 10**7}, "replications"),
])
def test_magnitudes_are_bounded(override, field):
    msg = _refusal(override)
    assert f": {field}: " in msg, msg


def _refusal(override: dict) -> str:
    """The message refusing the baseline with ``override``, which must be one line."""
    with pytest.raises(ScenarioError) as exc:
        iopsim.load_scenario(BASELINE, override)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_a_limit_can_be_raised_on_purpose(monkeypatch):
    with pytest.raises(ScenarioError, match="IOPSIM_LIMIT_HORIZON_DAYS"):
        iopsim.load_scenario(BASELINE, {"horizon_days": 40_000})
    monkeypatch.setenv("IOPSIM_LIMIT_HORIZON_DAYS", "50000")
    assert iopsim.load_scenario(BASELINE, {"horizon_days": 40_000}).horizon_days == 40_000


def test_replications_asked_on_the_command_line_are_bounded(tmp_path):
    r = invoke("run", BASELINE, "-n", "20000", "--out", tmp_path / "run")
    assert "replications" in one_line_exit_2(r) and not (tmp_path / "run").exists()


def test_a_billion_point_design_is_refused_before_it_is_built(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(BASELINE), "replications": 1, "kpis": ["iop_census_mean"],
                                     "design": {"kind": "lhs", "points": 1_000_000_000},
                                     "factors": {"horizon_days": {"range": [30, 60], "integer": True}}}))
    t0 = time.perf_counter()
    r = invoke("sweep", sweep, "--out", tmp_path / "out")
    assert "design.points" in one_line_exit_2(r) and time.perf_counter() - t0 < 30
    assert not (tmp_path / "out").exists()


def test_missing_sweep_base_names_the_sweep_file_and_field(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": "nope.yaml", "replications": 1, "kpis": ["iop_census_mean"],
                                     "factors": {"horizon_days": {"values": [30]}}}))
    line = one_line_exit_2(invoke("sweep", sweep, "--out", tmp_path / "out"))
    assert f"{sweep}: base: file not found" in line


def test_malformed_scheduler_is_one_line(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(BASELINE), "replications": 1, "kpis": ["iop_census_mean"],
                                     "factors": {"horizon_days": {"values": [30]}}}))
    for address in ("not an address", "tcp://host:99999", "http://127.0.0.1:8786"):
        assert "--scheduler" in one_line_exit_2(invoke("sweep", sweep, "--scheduler", address, "--out", tmp_path / "o"))


# --------------------------------------------------------------------------- messages


def test_a_child_changing_a_distribution_family_replaces_it(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text(yaml.safe_dump(minimal_scenario_dict()))
    d = {"extends": "parent.yaml", "stages": {"iop": {"los_days": {"dist": "exponential", "mean": 9}}}}
    child = write(tmp_path, yaml.safe_dump(d), "child.yaml")
    sc = load_scenario(child)
    assert sc.stages.iop.los_days.dist == "exponential" and sc.stages.iop.los_days.mean == 9


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", ["../../escape", "a/b/c", "x\x00y", "é" * 300, ".hidden", "/abs"])
def test_default_run_folder_stays_in_outputs(tmp_path, name):
    d = minimal_scenario_dict()
    d["name"] = name
    d["horizon_days"] = 10
    path = write(tmp_path, yaml.safe_dump(d))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), "run", str(path), "-n", "1", "--jobs", "1",
                           "--no-report"], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    made = [p for p in tmp_path.rglob("manifest.json")]
    assert len(made) == 1 and made[0].parent.parent == work / "outputs", made
    assert safe_name(name) in made[0].parent.name


def test_safe_name():
    assert safe_name("../../x") == "x" and safe_name("") == "run" and len(safe_name("a" * 500)) == 80


def test_out_below_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("run", BASELINE, "-n", "1", "--jobs", "1", "--set", "horizon_days=10", "--out", blocker / "run")
    assert "is a file, not a folder" in one_line_exit_2(r)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_an_unwritable_place_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = invoke("run", BASELINE, "-n", "1", "--jobs", "1", "--set", "horizon_days=10", "--out", locked / "run")
        assert "permission denied" in one_line_exit_2(r)
    finally:
        locked.chmod(0o700)


def test_two_runs_into_the_same_folder_keep_the_winner(tmp_path):
    final = tmp_path / "run"
    a, b = RunFolder(final), RunFolder(final)
    a.write_text("who.txt", "a")
    b.write_text("who.txt", "b")
    a.commit()
    with pytest.raises(IopsimError, match="another run wrote this folder"):
        with b:
            b.commit()
    assert (final / "who.txt").read_text() == "a"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")], "the loser's staging folder stays"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    res = iopsim.run(iopsim.load_scenario(BASELINE, {"horizon_days": 30}), replications=1)
    res.save(out, report=False)
    return out


@pytest.mark.parametrize("damage", ["", "{", "[]", '{"no": "kind"}'])
def test_damaged_manifest_is_one_line(small_run, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "manifest.json").write_text(damage)
    assert "manifest.json is damaged" in one_line_exit_2(invoke("calibrate", "--check", run))


def test_damaged_sweep_manifest_is_one_line(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(BASELINE), "replications": 1, "kpis": ["iop_census_mean"],
                                     "factors": {"horizon_days": {"values": [20]}}}))
    out = tmp_path / "out"
    assert invoke("sweep", sweep, "--jobs", "1", "--out", out).exit_code == 0
    (out / "manifest.json").write_text("{trunc")
    assert "manifest.json is damaged" in one_line_exit_2(invoke("sweep", sweep, "--jobs", "1", "--out", out))
    assert "damaged" in one_line_exit_2(invoke("sensitivity", out))


# --------------------------------------------------------------------------- signals


def _cli(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _pids_in(folder: Path) -> set[int]:
    """Python processes whose working directory is ``folder`` (the sweep, its fork server, its workers)."""
    found = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if Path(os.readlink(d / "cwd")) == folder and b"python" in (d / "cmdline").read_bytes():
                found.add(int(d.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_workers_do_not_outlive_a_killed_sweep(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(BASELINE), "replications": 4, "kpis": ["iop_census_mean"],
                                     "factors": {"horizon_days": {"values": [300, 310, 320, 330, 340, 350]}}}))
    proc = _cli(["sweep", sweep, "--jobs", "2", "--out", tmp_path / "out"], tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_pids_in(tmp_path) - {proc.pid}) < 3 and proc.poll() is None:
        time.sleep(0.1)
    helpers = _pids_in(tmp_path) - {proc.pid}
    assert len(helpers) >= 3 and proc.poll() is None, f"the pool did not start: {helpers}"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pids_in(tmp_path) & helpers:
        time.sleep(0.2)
    left = _pids_in(tmp_path) & helpers
    for pid in left:  # do not leave them behind even if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes outlived the killed sweep: {left}"


# --------------------------------------------------------------------------- property-based corruption

_EXTREME = st.sampled_from([1e308, -1e308, 5e-324, float("inf"), 10**400, -(10**400), "²", "9" * 5000, [1e308] * 7,
                            {"dist": "weibull", "shape": 0.001, "scale": 1.0}, {"<<": 1}])
_JUNK = st.one_of(_EXTREME, st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                  st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                           st.integers(), max_size=2))


def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


BASE_DOCS = [minimal_scenario_dict(), yaml.safe_load(BASELINE.read_text())]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.sampled_from(range(len(BASE_DOCS))), picks=st.lists(st.tuples(st.integers(0, 10**6), _JUNK,
                                                                             st.booleans()), min_size=1, max_size=3))
def test_corrupted_documents_load_or_fail_in_one_line(doc, picks):
    tree = copy.deepcopy(BASE_DOCS[doc])
    for index, junk, delete in picks:
        paths = [p for p in _paths(tree) if p]
        if not paths:
            break
        path = paths[index % len(paths)]
        node = tree
        for part in path[:-1]:
            node = node[part]
        if delete and isinstance(node, dict):
            del node[path[-1]]
        else:
            # A copy: the strategies hand out the same list object more than once, and inserting
            # it into itself would make a document that loops forever.
            node[path[-1]] = copy.deepcopy(junk)
    t0 = time.perf_counter()
    try:
        sc = validate_raw(tree, "corrupt.yaml")
    except ScenarioError as exc:
        msg = str(exc)
        assert msg.startswith("corrupt.yaml") and "\n" not in msg and len(msg) < 2000, msg
        return
    finally:
        assert time.perf_counter() - t0 < 10
    from iopsim.experiments.replications import run_replication

    short = sc.model_copy(update={"horizon_days": min(sc.horizon_days, 30), "warmup_days": 0})
    run_replication(short, 0)  # a valid document runs
    json.dumps(iopsim.check(short), default=str)


# --------------------------------------------------------------------------- more classes: rates, tails, numbers


@pytest.mark.parametrize("override,field", [
    ({"referrals.month_multipliers": [1e308] + [1.0] * 11}, "referrals.month_multipliers.0"),
    ({"referrals.month_multipliers.3": 20_000.0}, "referrals.month_multipliers.3"),
    ({"referrals.weekday_profile": [5e-324, 0, 0, 0, 0, 0, 0]}, "referrals.weekday_profile"),
    ({"referrals.weekday_profile": [1e308] * 7}, "referrals.weekday_profile"),
    ({"stages.php.los_days": {"dist": "weibull", "shape": 0.001, "scale": 10}}, "stages.php.los_days"),
    ({"stages.iop.program.plan.reviews": [{"week": 10**12, "extend_weeks": 1, "extend_probability": 0.5}]},
     "stages.iop.program.plan.reviews.0.week"),
])
def test_rates_tails_and_review_weeks_are_bounded(override, field):
    """A month multiplier multiplies the bounded rate; a tail can overflow with every parameter in bounds."""
    msg = _refusal(override)
    assert f": {field}" in msg, msg


def test_a_number_of_thousands_of_digits_is_one_line(tmp_path):
    huge = "9" * 5000
    assert "digits" in one_line_exit_2(invoke("validate", BASELINE, "--set", f"horizon_days={huge}"))
    s = write(tmp_path, f"extends: {BASELINE}\nhorizon_days: {huge}\n")
    assert "digits" in one_line_exit_2(invoke("validate", s))


def test_an_integer_too_large_for_a_float_is_one_line(tmp_path):
    """A count of 400 digits is above its limit, and the message can say so (it once failed
    converting the number to a float to print it)."""
    s = write(tmp_path, f"extends: {BASELINE}\nstages: {{residential: {{capacity: 1{'0' * 400}}}}}\n")
    line = one_line_exit_2(invoke("validate", s))
    assert "stages.residential.capacity" in line and "1.0e+400 is above the limit" in line, line


def test_a_huge_name_is_quoted_short(tmp_path):
    """A name thousands of characters long -- a value a check of ours refuses (an availability
    class), or a key -- is quoted by its two ends, on one short line."""
    s = write(tmp_path, f"extends: {BASELINE}\nstages: {{iop: {{tracks: {{day: {{accepts: [{'x' * 5000}]}}}}}}}}\n")
    line = one_line_exit_2(invoke("validate", s))
    assert "stages.iop.tracks.day.accepts" in line and "unknown availability class" in line and len(line) < 400, line
    key = write(tmp_path, f"extends: {BASELINE}\nstages: {{iop: {{{'k' * 1000}: 1}}}}\n", "key.yaml")
    line = one_line_exit_2(invoke("validate", key))
    assert "stages.iop: unknown field 'kkk" in line and " ... " in line and len(line) < 1200, line


def test_yaml_merge_keys_load_and_their_overrides_are_not_duplicates(tmp_path):
    """`<<: *defaults` is standard YAML: it loads as the safe loader loads it, and a key may override a merged one."""
    from iopsim.schema.limits import load_yaml_text

    text = "d: &d {capacity: 3, patience_days: {dist: fixed, value: 5}}\nphp:\n  <<: *d\n  capacity: 7\n"
    assert load_yaml_text(text) == yaml.safe_load(text)
    assert load_yaml_text(text)["php"] == {"capacity": 7, "patience_days": {"dist": "fixed", "value": 5}}
    assert "duplicate key" in str(_catch(lambda: load_yaml_text("a: &d {k: 1}\nb:\n  <<: *d\n  k: 2\n  k: 3\n")))
    s = write(tmp_path, f"extends: {BASELINE}\nname: merged\nstages:\n  php: &php\n    capacity: 4\n"
                        "  residential:\n    <<: *php\n    capacity: 9\n")
    assert iopsim.load_scenario(s).stages.residential.capacity == 9


@pytest.mark.parametrize("index", ["²", "٠", "9" * 5000, "-1"])
def test_list_indices_are_ascii_digits(index):
    r = invoke("validate", BASELINE, "--set", f"staff.roles.counselor.teams.{index}.headcount=1")
    assert "no list item" in one_line_exit_2(r)


def test_a_long_extends_chain_and_unusable_names_are_one_line(tmp_path):
    for i in range(40):
        write(tmp_path, f"extends: {f'c{i + 1}.yaml' if i < 39 else BASELINE}\n", f"c{i}.yaml")
    line = one_line_exit_2(invoke("validate", tmp_path / "c0.yaml"))
    assert "c0.yaml: extends:" in line and "IOPSIM_LIMIT_EXTENDS_DEPTH" in line, line
    long = write(tmp_path, "extends: " + "x" * 5000 + ".yaml\n", "long.yaml")
    assert "File name too long" in one_line_exit_2(invoke("validate", long))
    sweep = write(tmp_path, "base: " + "y" * 5000 + ".yaml\nkpis: [referrals]\n"
                            "factors: {referrals.referrals_per_week: {values: [4.0]}}\n", "sweep.yaml")
    assert "base:" in one_line_exit_2(invoke("sweep", sweep, "--out", tmp_path / "sw"))


def test_results_folders_below_a_file_are_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    short = write(tmp_path, f"extends: {BASELINE}\nhorizon_days: 30\n", "short.yaml")
    sweep = write(tmp_path, "base: short.yaml\nreplications: 1\nkpis: [referrals]\n"
                            "factors: {referrals.referrals_per_week: {values: [4.0]}}\n", "sweep.yaml")
    assert short.exists()
    assert "is a file, not a folder" in one_line_exit_2(invoke("sweep", sweep, "--out", tmp_path / "afile" / "sub"))
    plan = REPO_ROOT / "scenarios" / "plans" / "new-site.yaml"
    assert "is a file, not a folder" in one_line_exit_2(invoke("plan", plan, "--out", tmp_path / "afile" / "sub"))


@pytest.mark.parametrize("address", ["tls://127.0.0.1:8786", "ucx://x:1", "ws://h:1"])
def test_schedulers_other_than_tcp_are_one_line(tmp_path, address):
    sweep = write(tmp_path, f"base: {BASELINE}\nkpis: [referrals]\n"
                            "factors: {referrals.referrals_per_week: {values: [4.0]}}\n", "sweep.yaml")
    assert "tcp" in one_line_exit_2(invoke("sweep", sweep, "--scheduler", address, "--out", tmp_path / "sw"))


def test_jobs_are_bounded():
    with pytest.raises(IopsimError, match="IOPSIM_LIMIT_JOBS"):
        iopsim.run(iopsim.load_scenario(BASELINE, {"horizon_days": 30}), replications=1, jobs=100_000)


@pytest.mark.parametrize("damage", ["replications.csv", "summary.csv", "manifest-kind-only"])
def test_report_of_a_folder_with_a_damaged_table_is_one_line(small_run, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    if damage == "manifest-kind-only":
        (run / "manifest.json").write_text('{"kind": "run"}')
    else:
        (run / damage).write_text("")
    line = one_line_exit_2(invoke("report", run))
    assert str(run) in line, line


def test_a_damaged_sweep_part_is_one_line_on_resume(tmp_path):
    short = write(tmp_path, f"extends: {BASELINE}\nhorizon_days: 30\n", "short.yaml")
    sweep = write(tmp_path, "base: short.yaml\nreplications: 1\nkpis: [referrals]\n"
                            "factors: {referrals.referrals_per_week: {values: [4.0, 5.0]}}\n", "sweep.yaml")
    assert short.exists()
    out = tmp_path / "sw"
    assert invoke("sweep", sweep, "--jobs", "1", "--out", out).exit_code == 0
    part = sorted((out / "points").glob("point-*.parquet"))[0]
    part.write_bytes(b"")
    assert "delete it" in one_line_exit_2(invoke("sweep", sweep, "--jobs", "1", "--out", out))


# --------------------------------------------------------------------------- corrupted text, through the CLI

_SNIPPETS = ["x: &a [1, *a]", "!!python/object:os.system ls", "\t- tab", "horizon_days: " + "7" * 5000,
             "name: a\nname: b", "<<: *nowhere", "{[", "stages: {iop: {tracks: {day: {groups: 1e308}}}}",
             "referrals: {month_multipliers: [1e308, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}", "replications: -1",
             "extends: /dev/zero", "extends: " + "z" * 4000, "a: " + "[" * 200, "? [1, 2]\n: 3", "\x00"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["scenario", "sweep"]), cuts=st.lists(st.tuples(st.integers(0, 10**6),
                                                                           st.sampled_from(_SNIPPETS)),
                                                                 min_size=1, max_size=3))
def test_corrupted_text_validates_or_fails_in_one_line_from_the_cli(tmp_path, kind, cuts):
    """Whatever the text, `validate` (a scenario) or the sweep reader exits 0 or 2 with one line, quickly."""
    if kind == "scenario":
        lines = BASELINE.read_text(encoding="utf-8").splitlines()
    else:
        lines = [f"base: {BASELINE}", "name: corrupt", "replications: 1", "kpis: [referrals]", "factors:",
                 "  referrals.referrals_per_week: {values: [4.0, 6.0]}", "design: {kind: grid}"]
    for at, snippet in cuts:
        lines.insert(at % (len(lines) + 1), snippet)
    path = tmp_path / f"{kind}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    t0 = time.perf_counter()
    if kind == "scenario":
        r = invoke("validate", path)
        text = (r.stdout + (r.stderr or "")).strip()
        assert r.exit_code in (0, 2) and "Traceback" not in text, (r.exit_code, text[-2000:])
        if r.exit_code == 2:
            assert len([ln for ln in text.splitlines() if ln.startswith("error:")]) == 1, text[-2000:]
    else:
        from iopsim.experiments.sweep import load_sweep

        try:
            load_sweep(path)
        except IopsimError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)
    assert time.perf_counter() - t0 < 20


_NASTY = {"laughs.yaml": LAUGHS, "deep.yaml": "a: " + "[" * 100_000, "digits.yaml": "horizon_days: " + "9" * 5000,
          "month.yaml": f"extends: {BASELINE}\nreferrals: {{month_multipliers: [1.0e+308, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}}\n",
          "tail.yaml": f"extends: {BASELINE}\nstages: {{php: {{los_days: {{dist: weibull, shape: 0.001, scale: 9}}}}}}\n"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs resource limits (POSIX)")
def test_nasty_files_fail_in_one_line_within_bounded_memory(tmp_path):
    """Each file in a subprocess whose address space is capped at 3 GB: one line, exit 2, no MemoryError."""
    for name, text in _NASTY.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
                "from iopsim.cli import app; sys.argv = ['iopsim', 'validate', sys.argv[1]]; app()")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], capture_output=True, text=True,
                              timeout=120)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, \
            (name, proc.returncode, proc.stderr[-1500:])
