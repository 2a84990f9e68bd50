"""Hostile input, continued: SIGTERM during a run, and the report of a damaged run folder."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_hostile import BASELINE, REPO_ROOT, invoke, one_line_exit_2, small_run  # noqa: F401


def _cli(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_cleans_up_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = _cli(["run", BASELINE, "-n", "6", "--jobs", "1", "--set", "horizon_days=400", "--out", out], tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
            break  # the run folder is being written: the worst moment to be stopped
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()}"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")], "a .partial folder stayed behind"
    assert not out.exists(), "an incomplete run folder was left"



@pytest.mark.parametrize("damage", ["", "{", '{"no": "kind"}'])
def test_report_of_a_damaged_run_folder_is_one_line(small_run, tmp_path, damage):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "manifest.json").write_text(damage)
    assert "damaged" in one_line_exit_2(invoke("report", run))


def test_sigterm_of_a_parallel_sweep_stops_its_workers_at_once(tmp_path):
    """With --jobs 2 the exit does not wait for the replications in progress, and no process of the
    command's session outlives it (the fork server and its workers included)."""
    import os

    (tmp_path / "long.yaml").write_text(f"extends: {BASELINE}\nhorizon_days: 20000\n", encoding="utf-8")
    (tmp_path / "sweep.yaml").write_text(
        "base: long.yaml\nreplications: 4\nkpis: [programs_completed]\n"
        "factors: {referrals.referrals_per_week: {values: [4.0, 5.0, 6.0, 7.0]}}\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), "sweep", "sweep.yaml", "--jobs", "2",
                             "--out", "sw"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "sw" / "manifest.json").exists():
        time.sleep(0.05)
    time.sleep(2.0)  # the workers are busy with the first points
    assert proc.poll() is None, f"the sweep ended before it could be stopped: {proc.communicate()}"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 143 and "Traceback" not in err, (proc.returncode, err[-2000:])
    assert took < 5, f"{took:.1f} s from SIGTERM to exit: it waited for the replications in progress"
    time.sleep(2.0)
    left = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    for line in left.strip().splitlines():  # leave nothing behind even if the test fails
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left.strip(), f"processes outlived the stopped sweep:\n{left}"
