"""The reports in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

A run, a comparison and a sweep report are opened from disk; the page must show the answer
section, every figure must decode to an image of non-zero size, no script or console error may
occur, nothing may be fetched from the network and no table may push the page wider than the
window.  A deliberately broken copy of the report must be caught, so the check itself can fail.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium``, which ``.ci/run``
installs.  Outside CI the tests are skipped when that browser or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from iopsim import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"
WEEKEND = REPO_ROOT / "scenarios" / "weekend.yaml"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
WINDOW = {"width": 1200, "height": 1600}


def _need_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run should have installed Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _need_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("render")
    run_dir, cmp_dir, sweep_dir = base / "run", base / "cmp", base / "sweep"
    r = invoke("run", BASELINE, "--set", "horizon_days=90", "-n", "2", "--seed", "3", "--jobs", "1", "--out", run_dir)
    assert r.exit_code == 0, r.output
    c = invoke("compare", BASELINE, WEEKEND, "--set", "horizon_days=90", "-n", "2", "--seed", "3", "--jobs", "1",
               "--out", cmp_dir)
    assert c.exit_code == 0, c.output
    cmp3_dir = base / "cmp3"
    c3 = invoke("compare", BASELINE, WEEKEND, BASELINE.parent / "evening-virtual.yaml", "--set", "horizon_days=90",
                "-n", "2", "--seed", "3", "--jobs", "1", "--out", cmp3_dir)
    assert c3.exit_code == 0, c3.output
    (base / "short.yaml").write_text(yaml.safe_dump({"extends": str(BASELINE), "horizon_days": 60}), encoding="utf-8")
    sweep_file = base / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "base": "short.yaml", "name": "render", "seed": 1, "replications": 2,
        "kpis": ["programs_completed", "cost_per_completed_program"],
        "factors": {"referrals.referrals_per_week": {"values": [4.0, 6.0]}},
    }), encoding="utf-8")
    s = invoke("sweep", sweep_file, "--jobs", "1", "--out", sweep_dir)
    assert s.exit_code == 0, s.output
    rep = invoke("report", sweep_dir)
    assert rep.exit_code == 0, rep.output
    return {"run": run_dir, "compare": cmp_dir, "compare3": cmp3_dir, "sweep": sweep_dir}


def page_problems(browser, html: Path, min_images: int, width: int = WINDOW["width"]) -> list[str]:
    """Everything wrong with a rendered report, as sentences (empty when it renders well)."""
    problems: list[str] = []
    page = browser.new_page(viewport={**WINDOW, "width": width})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
    page.on("request", lambda r: problems.append(f"network request: {r.url[:80]}")
            if not r.url.startswith(("file:", "data:")) else None)
    try:
        page.goto(html.resolve().as_uri(), wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20_000)
        answer = page.evaluate("""() => { const a = document.querySelector('#answer');
            if (!a) return null; const r = a.getBoundingClientRect();
            return {text: a.innerText.trim().length, height: r.height, top: r.top + window.scrollY}; }""")
        if answer is None:
            problems.append("no #answer section")
        else:
            if answer["text"] < 80 or answer["height"] <= 0:
                problems.append(f"the answer section is empty or invisible: {answer}")
            if answer["top"] > 400:
                problems.append(f"the answer does not open the page (it starts {answer['top']:.0f} px down)")
        images = page.evaluate("""() => Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth,
            h: i.naturalHeight, shown: i.getBoundingClientRect().width}))""")
        if len(images) < min_images:
            problems.append(f"{len(images)} images, expected at least {min_images}")
        for im in images:
            if not (im["w"] > 0 and im["h"] > 0 and im["shown"] > 0):
                problems.append(f"image {im['alt']!r} did not render ({im})")
        wide = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        if wide > 1:
            problems.append(f"the page is {wide} px wider than the window")
        cut = page.evaluate("""() => Array.from(document.querySelectorAll('table.diffs')).filter(
            t => t.scrollWidth - t.clientWidth > 1).length""")
        if cut:
            problems.append(f"{cut} differences tables wider than the page (their last columns scroll out of sight)")
        empty = page.evaluate("() => Array.from(document.querySelectorAll('table')).filter(t => t.rows.length < 2).length")
        if empty:
            problems.append(f"{empty} tables without a body row")
    finally:
        page.close()
    return problems


@pytest.mark.parametrize("kind, min_images", [("run", 7), ("compare", 13), ("compare3", 13), ("sweep", 2)])
@pytest.mark.parametrize("width", [1200, 1024])
def test_report_renders_in_chromium(browser, folders, kind, min_images, width):
    problems = page_problems(browser, folders[kind] / "report.html", min_images, width)
    assert problems == [], f"{kind} report in Chromium at {width} px: " + "; ".join(problems)


def test_a_broken_report_is_caught(browser, folders, tmp_path):
    """The check can fail: a corrupt figure, no answer and a script error are all reported."""
    html = (folders["run"] / "report.html").read_text(encoding="utf-8")
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAAnotapng', html, count=1)
    broken = broken.replace('<section id="answer">', '<section id="question">', 1)
    broken = broken.replace("</body>", "<script>undefinedFunction()</script></body>")
    path = tmp_path / "broken.html"
    path.write_text(broken, encoding="utf-8")
    problems = " ".join(page_problems(browser, path, 7))
    assert "did not render" in problems, problems
    assert "no #answer section" in problems, problems
    assert "undefinedFunction" in problems, problems


def test_screenshot_of_the_top_of_the_comparison(browser, folders, tmp_path):
    """A screenshot of the first screen is a picture, not a blank page (the answer is in it)."""
    page = browser.new_page(viewport=WINDOW)
    try:
        page.goto((folders["compare"] / "report.html").resolve().as_uri(), wait_until="load")
        shot = tmp_path / "top.png"
        page.screenshot(path=str(shot))
        box = page.locator("#answer").bounding_box()
    finally:
        page.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, "blank screenshot"
    assert box is not None and box["y"] < WINDOW["height"] / 2, f"the answer is not on the first screen: {box}"


def test_copied_report_still_renders(browser, folders, tmp_path):
    """Self-contained: moved away from its folder, the report still shows every figure."""
    dest = tmp_path / "alone.html"
    shutil.copy(folders["compare"] / "report.html", dest)
    assert page_problems(browser, dest, 13) == []
