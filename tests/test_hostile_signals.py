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
