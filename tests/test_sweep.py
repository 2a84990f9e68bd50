"""Parameter sweeps: designs, validation, local vs Dask, failures, kill-and-resume, figures.

Every sweep here is tiny: a one-stage IOP base scenario written into ``tmp_path``
(no intake, one referral source placing everyone in IOP) and a handful of
points.  Most tests run in-process (``execute_sweep`` or ``CliRunner`` on
``cli.app``); the kill/resume tests run the real ``iopsim`` script in a
subprocess (its own process group) and signal it, and the Dask test starts a
real scheduler and worker bound to 127.0.0.1.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from iopsim import cli
import iopsim.outputs.figures
import iopsim.experiments.executor as executor_mod
from conftest import minimal_scenario_dict
from iopsim import api
from iopsim.experiments.sweep import SweepFile, design_points, done_points, execute_sweep

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PART_NAME = re.compile(r"point-\d{6}\.parquet")
KPIS = ["iop_census_mean", "iop_admitted_wait_mean_days"]


# --------------------------------------------------------------------------- helpers


def base_scenario(horizon: int = 200) -> dict[str, Any]:
    """One IOP slot stage {capacity, los_days}, no intake, one source placing everyone in IOP."""
    d = minimal_scenario_dict()
    d["name"] = "sweep-base"
    d["horizon_days"] = horizon
    return d


def make_sweep(
    folder: Path,
    factors: dict[str, dict],
    *,
    name: str = "sweep.yaml",
    kpis: list[str] | None = None,
    design: dict | None = None,
    replications: int = 1,
    seed: int = 5,
    horizon: int = 200,
    **extra: Any,
) -> Path:
    """Write ``base.yaml`` (unless present) and a sweep file next to it; return the sweep file."""
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base.yaml"
    if not base.exists():
        base.write_text(yaml.safe_dump(base_scenario(horizon), sort_keys=False), encoding="utf-8")
    data = {"base": "base.yaml", "seed": seed, "replications": replications, "kpis": kpis or list(KPIS),
            "design": design or {"kind": "grid"}, "factors": factors, **extra}
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def in_memory(factors: dict[str, dict], design: dict, seed: int = 0) -> SweepFile:
    return SweepFile.model_validate({"base": "-", "seed": seed, "kpis": ["x"], "design": design, "factors": factors})


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def iopsim_command() -> list[str]:
    script = Path(sys.executable).with_name("iopsim")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import cli; cli.app()"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "CLICOLOR_FORCE")}
    env["COLUMNS"] = "60"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def parts(folder: Path) -> list[Path]:
    d = folder / "points"
    return sorted(d.glob("point-*.parquet")) if d.exists() else []


def stray_files(folder: Path) -> list[str]:
    """Anything in points/ that is not a finished part (temp files of interrupted writes)."""
    d = folder / "points"
    return sorted(p.name for p in d.iterdir() if not PART_NAME.fullmatch(p.name)) if d.exists() else []


def assert_bit_identical(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    """Same columns, dtypes, rows and values -- floats compared by their bit patterns (NaN-safe)."""
    assert list(a.columns) == list(b.columns), f"{what}: columns differ: {list(a.columns)} vs {list(b.columns)}"
    assert a.shape == b.shape, f"{what}: shapes differ: {a.shape} vs {b.shape}"
    for col in a.columns:
        x, y = a[col], b[col]
        assert x.dtype == y.dtype, f"{what}: dtype of {col} differs: {x.dtype} vs {y.dtype}"
        if x.dtype.kind == "f":
            xb = x.to_numpy().view(np.uint64)
            yb = y.to_numpy().view(np.uint64)
            bad = np.flatnonzero(xb != yb)
            assert bad.size == 0, (f"{what}: column {col} differs at rows {bad[:5].tolist()}: "
                                   f"{x.iloc[bad[:3]].tolist()} vs {y.iloc[bad[:3]].tolist()}")
        else:
            assert x.equals(y), f"{what}: column {col} differs"


def assert_png(path: Path) -> None:
    assert path.is_file(), f"figure {path} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG (starts {data[:8]!r})"
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 100 and img.shape[1] >= 100, f"{path}: implausible image shape {img.shape}"
    assert float(np.ptp(img[..., :3])) > 0, f"{path}: a blank image"


def assert_clean_error(result, *fragments: str) -> str:
    """Exit 2, no traceback, no stdout, and exactly one non-empty stderr line 'error: ...' with fragments."""
    out = result.stdout + result.stderr
    assert result.exit_code == 2, f"expected exit code 2, got {result.exit_code}; output={out!r}; exc={result.exception!r}"
    assert "Traceback" not in out, f"a traceback reached the user: {out!r}"
    assert result.stdout.strip() == "", f"nothing should be printed on stdout, got {result.stdout!r}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one error line, got {lines!r}"
    line = lines[0]
    assert line.startswith("error:"), f"expected 'error: ...', got {line!r}"
    for frag in fragments:
        assert frag in line, f"expected {frag!r} in the error line {line!r}"
    return line


# --------------------------------------------------------------------------- designs


def test_grid_is_full_product_in_fixed_order():
    sw = in_memory({"stages.iop.capacity": {"values": [4, 6, 8]},
                    "referrals.referrals_per_week": {"range": [3.0, 6.0], "steps": 3}}, {"kind": "grid"})
    pts = design_points(sw)
    expected = [{"stages.iop.capacity": c, "referrals.referrals_per_week": r}
                for c in (4, 6, 8) for r in (3.0, 4.5, 6.0)]
    assert pts == expected, f"grid should be the product, first factor outermost: {pts}"
    assert design_points(sw) == pts, "grid order must be the same on every call"
    assert all(type(p["referrals.referrals_per_week"]) is float for p in pts), \
        f"range values should be plain Python floats: {[type(p['referrals.referrals_per_week']) for p in pts]}"


@pytest.mark.parametrize("kind", ["lhs", "sobol"])
def test_space_filling_designs_inside_ranges_and_reproducible(kind):
    ranges = {"a": (3.0, 6.0), "b": (0.55, 0.85), "c": (-2.0, 10.0)}
    factors = {k: {"range": list(v)} for k, v in ranges.items()}
    n = 16
    pts = design_points(in_memory(factors, {"kind": kind, "points": n}, seed=11))
    assert len(pts) == n, f"{kind}: expected {n} points, got {len(pts)}"
    for p in pts:
        for k, (lo, hi) in ranges.items():
            assert lo <= p[k] <= hi, f"{kind}: {k}={p[k]} outside [{lo}, {hi}]"
    # one point per 1/n stratum of every factor (true of an LHS and of a 2^m-point scrambled Sobol' net)
    for k, (lo, hi) in ranges.items():
        strata = sorted(min(int((p[k] - lo) / (hi - lo) * n), n - 1) for p in pts)
        assert strata == list(range(n)), f"{kind}: factor {k} does not fill its {n} strata once each: {strata}"
    again = design_points(in_memory(factors, {"kind": kind, "points": n}, seed=11))
    assert again == pts, f"{kind}: the same seed must give the same points"
    other = design_points(in_memory(factors, {"kind": kind, "points": n}, seed=12))
    assert other != pts, f"{kind}: a different seed should give different points"


@pytest.mark.parametrize("kind", ["grid", "lhs", "sobol", "saltelli", "morris"])
def test_integer_factors_are_rounded(kind):
    design = {"grid": {"kind": "grid"}, "lhs": {"kind": "lhs", "points": 16}, "sobol": {"kind": "sobol", "points": 16},
              "saltelli": {"kind": "saltelli", "n": 8}, "morris": {"kind": "morris", "n": 4}}[kind]
    cap = {"range": [2, 9], "integer": True}
    if kind == "grid":
        cap["steps"] = 4
    rate = {"range": [3.0, 6.0]} if kind != "grid" else {"range": [3.0, 6.0], "steps": 2}
    sw = in_memory({"stages.iop.capacity": cap, "referrals.referrals_per_week": rate}, design, seed=4)
    pts = design_points(sw)
    caps = [p["stages.iop.capacity"] for p in pts]
    assert all(type(c) is int for c in caps), f"{kind}: integer factor should give ints: {caps}"
    assert all(2 <= c <= 9 for c in caps), f"{kind}: rounded values left the range: {caps}"
    raw_cap = {k: v for k, v in cap.items() if k != "integer"}
    raw = design_points(in_memory({"stages.iop.capacity": raw_cap, "referrals.referrals_per_week": rate}, design, seed=4))
    assert caps == [int(round(p["stages.iop.capacity"])) for p in raw], \
        f"{kind}: integer values should be the rounded continuous design"
    assert [p["referrals.referrals_per_week"] for p in pts] == [p["referrals.referrals_per_week"] for p in raw], \
        f"{kind}: rounding one factor must not change the others"
    if kind == "grid":
        assert sorted(set(caps)) == [2, 4, 7, 9], f"linspace(2, 9, 4) rounds to 2, 4, 7, 9; got {sorted(set(caps))}"


@pytest.mark.parametrize("d", [2, 3])
def test_saltelli_and_morris_sizes(d):
    factors = {f"f{i}": {"range": [float(i), float(i) + 1.5]} for i in range(d)}
    n = 8
    salt = design_points(in_memory(factors, {"kind": "saltelli", "n": n}, seed=1))
    assert len(salt) == n * (d + 2), f"saltelli with n={n}, d={d} should give n*(d+2)={n * (d + 2)} points, got {len(salt)}"
    for p in salt:
        for i in range(d):
            assert i <= p[f"f{i}"] <= i + 1.5, f"saltelli point outside the range: {p}"
    assert design_points(in_memory(factors, {"kind": "saltelli", "n": n}, seed=1)) == salt, "saltelli not reproducible"
    morris = design_points(in_memory(factors, {"kind": "morris", "n": 5}, seed=1))
    assert len(morris) == 5 * (d + 1), f"morris with 5 trajectories, d={d} should give {5 * (d + 1)} points, got {len(morris)}"


# --------------------------------------------------------------------------- validation


VALIDATION_CASES = {
    "missing-path": (
        {"factors": {"stages.iop.no_such_field": {"values": [1, 2]}}},
        ["factors.stages.iop.no_such_field", "no such field"],
    ),
    "low-above-high": (
        {"factors": {"referrals.referrals_per_week": {"range": [6.0, 3.0], "steps": 3}}},
        ["factors.referrals.referrals_per_week", "6.0 > 3.0"],
    ),
    "capacity-zero": (
        {"factors": {"stages.iop.capacity": {"values": [4, 0, 8]}}},
        ["stages.iop.capacity", "at point stages.iop.capacity=0"],
    ),
    "probability-above-one": (
        {"factors": {"referrals.sources.community.placement.iop": {"values": [1.0, 1.5]},
                     "stages.iop.capacity": {"values": [5]}}},
        ["referrals.sources.community.placement.iop", "referrals.sources.community.placement.iop=1.5",
         "stages.iop.capacity=5"],
    ),
    "unknown-kpi": (
        {"kpis": ["iop_census_mean", "iop_wait_mean_dayz"], "factors": {"stages.iop.capacity": {"values": [4]}}},
        ["kpis.1", "iop_wait_mean_dayz"],
    ),
    "grid-range-without-steps": (
        {"factors": {"referrals.referrals_per_week": {"range": [3.0, 6.0]}}},
        ["factors.referrals.referrals_per_week", "steps"],
    ),
    "saltelli-with-values": (
        {"design": {"kind": "saltelli", "n": 8},
         "factors": {"referrals.referrals_per_week": {"range": [3.0, 6.0]}, "stages.iop.capacity": {"values": [4, 8]}}},
        ["factors.stages.iop.capacity", "saltelli", "range"],
    ),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_invalid_sweep_fails_before_anything_runs(tmp_path, case, monkeypatch):
    changes, fragments = VALIDATION_CASES[case]
    factors = changes.get("factors")
    extra = {k: v for k, v in changes.items() if k != "factors"}
    sw = make_sweep(tmp_path, factors, **extra)
    calls = []
    monkeypatch.setattr(executor_mod, "run_task", lambda *a, **k: calls.append(a) or pytest.fail("a point ran"))
    out = tmp_path / "out"
    result = invoke("sweep", sw, "--jobs", "1", "--out", out)
    assert_clean_error(result, "sweep.yaml", *fragments)
    assert not out.exists(), f"{case}: the output folder was created although validation failed: {list(out.rglob('*'))}"
    assert calls == [], f"{case}: points ran before validation failed"


def test_out_folder_of_a_different_sweep_is_refused(tmp_path):
    sw_a = make_sweep(tmp_path, {"stages.iop.capacity": {"values": [4, 8]}}, name="a.yaml")
    out = tmp_path / "out"
    first = invoke("sweep", sw_a, "--jobs", "1", "--out", out)
    assert first.exit_code == 0, f"setup sweep failed: {first.stdout + first.stderr}"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    sw_b = make_sweep(tmp_path, {"stages.iop.capacity": {"values": [4, 6, 8]}}, name="b.yaml")
    result = invoke("sweep", sw_b, "--jobs", "1", "--out", out)
    assert_clean_error(result, str(out), "different sweep")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, f"a refused sweep changed the folder: {sorted(set(after) ^ set(before))}"

    # the same sweep file over a changed base scenario is a different sweep too
    base = tmp_path / "base.yaml"
    changed = base_scenario()
    changed["referrals"]["referrals_per_week"] = 5.0
    base.write_text(yaml.safe_dump(changed), encoding="utf-8")
    result = invoke("sweep", sw_a, "--jobs", "1", "--out", out)
    assert_clean_error(result, str(out), "different sweep")

    # a non-empty folder that is not a sweep at all
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me", encoding="utf-8")
    result = invoke("sweep", sw_b, "--jobs", "1", "--out", other)
    assert_clean_error(result, str(other))
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"], "a refused sweep wrote into a foreign folder"


@pytest.fixture(scope="module")
def script_validation_error(tmp_path_factory):
    """The real console script on a sweep with an unknown KPI (stdout/stderr pipes, not a terminal)."""
    folder = tmp_path_factory.mktemp("script-error")
    sw = make_sweep(folder, {"stages.iop.capacity": {"values": [4]}}, kpis=["iop_wait_mean_dayz"])
    out = folder / "out"
    proc = subprocess.run([*iopsim_command(), "sweep", str(sw), "--out", str(out)], cwd=folder, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    return proc, out


def test_script_validation_error_has_no_traceback(script_validation_error):
    proc, out = script_validation_error
    assert proc.returncode == 2, f"expected exit 2, got {proc.returncode}: {proc.stderr!r}"
    assert "Traceback" not in proc.stdout + proc.stderr, f"traceback reached the user: {proc.stderr!r}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "iop_wait_mean_dayz" in lines[0], \
        f"expected one 'error:' line naming the KPI, got {proc.stderr!r}"
    assert not out.exists(), "the output folder was created although validation failed"


def test_script_validation_error_is_exactly_one_line(script_validation_error):
    proc, _out = script_validation_error
    assert proc.stderr.splitlines() == [proc.stderr.strip()], \
        f"stderr should be exactly the one error line, got {proc.stderr!r}"


# --------------------------------------------------------------------------- failures


def test_one_bad_point_does_not_kill_the_sweep(tmp_path, monkeypatch):
    sw = make_sweep(tmp_path, {"stages.iop.capacity": {"values": [4, 6, 8]}}, replications=2)
    out = tmp_path / "out"
    real = executor_mod.run_replication

    def flaky(scenario, *args, **kwargs):
        if scenario.stages.iop.capacity == 6:
            raise RuntimeError("boom at capacity 6")
        return real(scenario, *args, **kwargs)

    monkeypatch.setattr(executor_mod, "run_replication", flaky)
    res = execute_sweep(sw, out, jobs=1)
    assert [(f["point_id"], f["factors"]) for f in res["failures"]] == [(1, {"stages.iop.capacity": 6})], \
        f"expected point 1 (capacity 6) as the only failure, got {res['failures']}"
    assert "RuntimeError: boom at capacity 6" in res["failures"][0]["error"], f"error text lost: {res['failures']}"
    assert done_points(out) == {0, 2}, f"the good points should be stored, got parts for {done_points(out)}"
    results = pd.read_parquet(out / "results.parquet")
    assert sorted(set(results["point_id"])) == [0, 2], f"results.parquet holds points {sorted(set(results['point_id']))}"
    assert len(results) == 4, f"2 points x 2 replications expected, got {len(results)} rows"
    on_disk = json.loads((out / "failures.json").read_text(encoding="utf-8"))
    assert [f["point_id"] for f in on_disk] == [1], f"failures.json should list point 1: {on_disk}"

    # through the CLI: still failing -> exit 1, the failure listed with its factor values
    result = invoke("sweep", sw, "--jobs", "1", "--out", out)
    text = result.stdout + result.stderr
    assert result.exit_code == 1, f"a sweep with a failed point should exit 1, got {result.exit_code}: {text!r}"
    assert "Traceback" not in text, f"traceback reached the user: {text!r}"
    fail_lines = [ln for ln in result.stderr.splitlines() if "point 1 failed" in ln]
    assert len(fail_lines) == 1 and "stages.iop.capacity" in fail_lines[0] and "6" in fail_lines[0] \
        and "boom at capacity 6" in fail_lines[0], f"failure not listed with its factors and error: {result.stderr!r}"
    assert "2 already done, 0 run now" in result.stdout, f"the stored points should be skipped: {result.stdout!r}"

    # cause removed: only the missing point runs
    monkeypatch.setattr(executor_mod, "run_replication", real)
    stamps = {p.name: p.stat().st_mtime_ns for p in parts(out)}
    result = invoke("sweep", sw, "--jobs", "1", "--out", out)
    assert result.exit_code == 0, f"re-run should succeed: {result.stdout + result.stderr!r}"
    assert "2 already done, 1 run now" in result.stdout, f"only the missing point should run: {result.stdout!r}"
    assert {p.name: p.stat().st_mtime_ns for p in parts(out) if p.name in stamps} == stamps, \
        "stored parts were rewritten on resume"
    assert done_points(out) == {0, 1, 2}, f"all points should now be stored: {done_points(out)}"
    results = pd.read_parquet(out / "results.parquet")
    assert list(zip(results["point_id"], results["replication"])) == [(p, r) for p in range(3) for r in range(2)], \
        "results.parquet should hold every (point, replication) once, in order"
    assert json.loads((out / "failures.json").read_text(encoding="utf-8")) == [], "failures.json should be empty now"


# --------------------------------------------------------------------------- figures


def _spy(monkeypatch, name: str, calls: list) -> None:
    real = getattr(iopsim.outputs.figures, name)

    def spy(*args, **kwargs):
        calls.append((name, args[-1].name))
        return real(*args, **kwargs)

    monkeypatch.setattr(iopsim.outputs.figures, name, spy)


def test_one_factor_sweep_draws_a_line_plot_per_kpi(tmp_path, monkeypatch):
    calls: list = []
    _spy(monkeypatch, "sweep_lines", calls)
    _spy(monkeypatch, "sweep_heatmap", calls)
    sw = make_sweep(tmp_path, {"stages.iop.capacity": {"values": [4, 6, 8]}}, replications=2)
    res = api.sweep(sw, tmp_path / "out", jobs=1)
    assert res.failures == [], f"unexpected failures: {res['failures']}"
    for kpi in KPIS:
        assert_png(tmp_path / "out" / "figures" / f"{kpi}.png")
    assert sorted(calls) == sorted(("sweep_lines", f"{k}.png") for k in KPIS), f"expected one line plot per KPI: {calls}"


def test_two_factor_grid_draws_a_heatmap_per_kpi(tmp_path, monkeypatch):
    calls: list = []
    _spy(monkeypatch, "sweep_lines", calls)
    _spy(monkeypatch, "sweep_heatmap", calls)
    sw = make_sweep(tmp_path, {"stages.iop.capacity": {"values": [4, 8]},
                               "referrals.referrals_per_week": {"range": [3.0, 6.0], "steps": 2}})
    res = api.sweep(sw, tmp_path / "out", jobs=1)
    assert res.failures == [], f"unexpected failures: {res['failures']}"
    for kpi in KPIS:
        assert_png(tmp_path / "out" / "figures" / f"{kpi}.png")
    assert sorted(calls) == sorted(("sweep_heatmap", f"{k}.png") for k in KPIS), f"expected one heatmap per KPI: {calls}"


# --------------------------------------------------------------------------- Dask vs local processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a child started with start_new_session (and its children), then kill if needed."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # any straggler in the group
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        return ""


@pytest.fixture(scope="module")
def dask_cluster(request, tmp_path_factory):
    """A real Dask scheduler and one single-threaded worker, as subprocesses on 127.0.0.1."""
    logs = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = child_env()

    sched_log = logs / "scheduler.log"
    with open(sched_log, "wb") as fh:
        sched = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(lambda: _stop_group(sched))
    deadline = time.monotonic() + 60
    while True:
        if sched.poll() is not None:
            pytest.fail(f"the Dask scheduler exited with {sched.returncode}: {_tail(sched_log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"the Dask scheduler did not accept connections within 60 s: {_tail(sched_log)}")
            time.sleep(0.2)

    worker_log = logs / "worker.log"
    with open(worker_log, "wb") as fh:
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard", "--local-directory", str(logs / "worker-space")],
            cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(lambda: _stop_group(worker))

    from distributed import Client

    with Client(address, timeout="30s") as client:
        try:
            client.wait_for_workers(1, timeout=90)
        except (TimeoutError, OSError) as exc:
            pytest.fail(f"no Dask worker registered within 90 s ({exc}): {_tail(worker_log)}")
        workers = client.scheduler_info()["workers"]
        assert all(w.startswith("tcp://127.0.0.1:") for w in workers), f"workers not on loopback: {list(workers)}"
    return {"address": address, "worker": worker, "worker_log": worker_log}


def _worker_tasks(address: str) -> int:
    """How many tasks the cluster's worker(s) have executed so far."""
    from distributed import Client

    with Client(address, timeout="30s") as client:
        return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


def test_dask_cluster_gives_identical_results_to_local_processes(tmp_path, dask_cluster):
    address = dask_cluster["address"]
    sw = make_sweep(tmp_path, {"stages.iop.capacity": {"values": [4, 8]},
                               "referrals.referrals_per_week": {"range": [3.0, 6.0], "steps": 3}}, replications=2,
                    kpis=["iop_census_mean", "iop_admitted_wait_mean_days", "programs_completed"])
    n_points = 6
    before = _worker_tasks(address)
    r_dask = invoke("sweep", sw, "--scheduler", address, "--out", tmp_path / "dask")
    assert r_dask.exit_code == 0, f"Dask sweep failed: {r_dask.stdout + r_dask.stderr}; {_tail(dask_cluster['worker_log'])}"
    ran_on_cluster = _worker_tasks(address) - before
    assert ran_on_cluster == n_points, f"expected the {n_points} points to run on the Dask worker, it ran {ran_on_cluster}"
    r_local = invoke("sweep", sw, "--jobs", "2", "--out", tmp_path / "local")
    assert r_local.exit_code == 0, f"local sweep failed: {r_local.stdout + r_local.stderr}"

    man = json.loads((tmp_path / "dask" / "manifest.json").read_text(encoding="utf-8"))
    assert man["scheduler"] == address, f"manifest should record the scheduler: {man.get('scheduler')!r}"
    dask_df = pd.read_parquet(tmp_path / "dask" / "results.parquet")
    local_df = pd.read_parquet(tmp_path / "local" / "results.parquet")
    assert len(dask_df) == n_points * 2, f"expected {n_points * 2} rows, got {len(dask_df)}"
    assert_bit_identical(dask_df, local_df, "results.parquet (Dask vs --jobs 2)")
    pd.testing.assert_frame_equal(dask_df, local_df, check_exact=True)
    dask_csv = (tmp_path / "dask" / "points.csv").read_text(encoding="utf-8")
    local_csv = (tmp_path / "local" / "points.csv").read_text(encoding="utf-8")
    assert dask_csv == local_csv, "points.csv differs between the Dask and the local run"
    assert len(pd.read_csv(tmp_path / "dask" / "points.csv")) == n_points, "points.csv should have one row per point"


def test_a_plan_on_the_dask_cluster_matches_local_processes(tmp_path, dask_cluster):
    """The planner runs on the same executor: the same plans, statuses and estimates either way."""
    from test_planner import capacity_plan, mean_wait, mmc_base, target_between

    base = mmc_base(tmp_path, 2.4, 1.0, horizon=500, warmup=50)
    target = target_between(lambda c: mean_wait(c, 2.4, 1.0), 4)
    plan = capacity_plan(tmp_path, base, 2, 6, {"kpi": "iop_admitted_wait_mean_days", "max": target})
    r_dask = invoke("plan", plan, "--scheduler", dask_cluster["address"], "--out", tmp_path / "dask")
    assert r_dask.exit_code == 0, f"Dask plan failed: {r_dask.stdout + r_dask.stderr}; {_tail(dask_cluster['worker_log'])}"
    r_local = invoke("plan", plan, "--jobs", "2", "--out", tmp_path / "local")
    assert r_local.exit_code == 0, r_local.stdout + r_local.stderr
    dask_csv = (tmp_path / "dask" / "plans.csv").read_text(encoding="utf-8")
    assert dask_csv == (tmp_path / "local" / "plans.csv").read_text(encoding="utf-8"), "plans.csv differs (Dask vs local)"
    assert (tmp_path / "dask" / "recommended.yaml").is_file()


# --------------------------------------------------------------------------- kill and resume


KILL_POINTS = 16
KILL_REPLICATIONS = 4


@pytest.fixture(scope="module")
def kill_sweep(tmp_path_factory):
    """A 16-point sweep slow enough to be killed part-way, and its uninterrupted results.

    Each point takes a few hundred milliseconds, so the whole sweep lasts seconds: a test
    process that is descheduled for a moment on a busy machine still signals it mid-way."""
    folder = tmp_path_factory.mktemp("kill")
    sw = make_sweep(folder, {"stages.iop.capacity": {"values": [4, 6, 8, 10]},
                             "referrals.referrals_per_week": {"range": [3.0, 7.5], "steps": 4}},
                    replications=KILL_REPLICATIONS, horizon=1500, seed=9)
    ref = folder / "reference"
    res = execute_sweep(sw, ref, jobs=1)
    assert res["failures"] == [] and res["points"] == KILL_POINTS, f"reference run failed: {res['failures']}"
    return sw, ref


@pytest.mark.parametrize(("sig", "jobs"), [(signal.SIGKILL, 2), (signal.SIGTERM, 1)],
                         ids=["SIGKILL-jobs2", "SIGTERM-jobs1"])
def test_killed_sweep_resumes_to_the_same_results(tmp_path, kill_sweep, sig, jobs):
    """Signal the whole process group (with --jobs 2: the CLI, the forkserver and its workers), then re-run."""
    sw, ref = kill_sweep
    out = tmp_path / "out"
    cmd = [*iopsim_command(), "sweep", str(sw), "--jobs", str(jobs), "--out", str(out)]
    log = tmp_path / "first.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=child_env(), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(parts(out)) < 2:
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended (rc {proc.returncode}) before 2 parts were stored: {_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"no 2 parts within 120 s: {_tail(log)}")
            time.sleep(0.02)
        assert proc.poll() is None, \
            f"the sweep finished (rc {proc.returncode}) before it could be signalled: {_tail(log)}"
        os.killpg(proc.pid, sig)
        rc = proc.wait(timeout=30)
    finally:
        _stop_group(proc)
    # SIGKILL kills at once; SIGTERM is handled like Ctrl-C: the sweep unwinds and exits 143.
    want = 128 + sig if sig == signal.SIGTERM else -sig
    assert rc == want, f"the sweep should have ended by {sig.name} with {want}, exit status {rc}: {_tail(log)}"
    stored = len(parts(out))
    assert 2 <= stored < KILL_POINTS, f"the kill should land part-way: {stored} of {KILL_POINTS} parts stored"
    stamps = {p.name: p.stat().st_mtime_ns for p in parts(out)}

    second = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, f"resume failed ({second.returncode}): {second.stdout + second.stderr}"
    assert f"{stored} already done, {KILL_POINTS - stored} run now" in second.stdout, \
        f"resume should skip the {stored} stored points: {second.stdout!r}"
    assert {p.name: p.stat().st_mtime_ns for p in parts(out) if p.name in stamps} == stamps, \
        "stored parts were rewritten on resume"

    results = pd.read_parquet(out / "results.parquet")
    counts = results.groupby("point_id").size()
    assert sorted(counts.index) == list(range(KILL_POINTS)), f"point ids in results: {sorted(counts.index)}"
    assert (counts == KILL_REPLICATIONS).all(), \
        f"every point should have exactly its {KILL_REPLICATIONS} replications: {counts.to_dict()}"
    dup = results.duplicated(["point_id", "replication"])
    assert not dup.any(), f"duplicate (point_id, replication) rows: {results.loc[dup, ['point_id', 'replication']]}"
    assert stray_files(out) == [], f"temp files left in points/: {stray_files(out)}"

    assert_bit_identical(results, pd.read_parquet(ref / "results.parquet"), "resumed vs uninterrupted results")
    assert (out / "points.csv").read_text(encoding="utf-8") == (ref / "points.csv").read_text(encoding="utf-8"), \
        "points.csv of the resumed sweep differs from the uninterrupted run"


def test_resume_recomputes_a_point_whose_write_was_interrupted(tmp_path):
    """A kill between ``to_parquet(tmp)`` and ``os.replace`` leaves a temp file and no part: resume redoes the point."""
    sw = make_sweep(tmp_path, {"stages.iop.capacity": {"values": [4, 8]}}, replications=2)
    out = tmp_path / "out"
    execute_sweep(sw, out, jobs=1)
    original = pd.read_parquet(out / "results.parquet")
    (out / "points" / "point-000001.parquet").unlink()
    (out / "points" / ".point-000001.parquet.tmp").write_bytes(b"PAR1 truncated")
    (out / ".results.parquet.tmp").write_bytes(b"PAR1 truncated")
    res = execute_sweep(sw, out, jobs=1)
    assert (res["skipped"], res["ran"]) == (1, 1), f"only point 1 should run again: {res['skipped']=}, {res['ran']=}"
    assert done_points(out) == {0, 1}, f"point 1 should be stored again: {done_points(out)}"
    assert stray_files(out) == [], f"temp files left in points/ after resume: {stray_files(out)}"
    assert not (out / ".results.parquet.tmp").exists(), "stale .results.parquet.tmp left after resume"
    assert_bit_identical(pd.read_parquet(out / "results.parquet"), original, "recomputed point vs original run")
