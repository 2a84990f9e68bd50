"""``iopsim app`` end to end, in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The test starts ``iopsim app --port <free port> --host 127.0.0.1`` as a user would (the console
script, from a folder holding ``scenarios/``), and, as a person who has never seen YAML: describes
their site on the first page (8 referrals a week, three counselors; the two groups of the
baseline), runs 2 replications, finds the answer in sentences and the figures on the results page,
and downloads the report.  Nothing may be fetched from anywhere but the app's own address.

Screenshots are saved as test artefacts under pytest's temporary folder and, when
``IOPSIM_DOCS_SCREENSHOTS`` names a folder (``IOPSIM_DOCS_SCREENSHOTS=docs/images``), there too:
the app guide's pictures are made by this test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_report_render import browser  # noqa: F401 (the report tests' headless Chromium, as a fixture)

REPO = Path(__file__).resolve().parents[1]
WINDOW = {"width": 1280, "height": 900}
STARTUP = 90     # seconds for the server to answer
RUN = 300        # seconds for 2 replications of the baseline, figures and report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _iopsim() -> list[str]:
    """The ``iopsim`` console script next to this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("iopsim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "iopsim.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``iopsim app`` on a free port of 127.0.0.1, started in a folder with the shipped scenarios."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(REPO / "scenarios", site / "scenarios")
    port = _free_port()
    log = open(site / "server.log", "w", encoding="utf-8")
    proc = subprocess.Popen([*_iopsim(), "app", "--port", str(port), "--host", "127.0.0.1"], cwd=site,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            if proc.poll() is not None:
                pytest.fail(f"iopsim app exited ({proc.returncode}): {(site / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"iopsim app did not answer within {STARTUP} s: {(site / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield {"url": url, "folder": site, "port": port}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover - a server that ignores SIGTERM
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _shots(tmp_path: Path) -> list[Path]:
    """Where screenshots go: the test's folder, and the docs' images folder when asked for."""
    out = [tmp_path]
    docs = os.environ.get("IOPSIM_DOCS_SCREENSHOTS")
    if docs:
        folder = Path(docs) if Path(docs).is_absolute() else REPO / docs
        folder.mkdir(parents=True, exist_ok=True)
        out.append(folder)
    return out


def _screenshot(page, name: str, folders: list[Path], height: int | None = None, top=None) -> Path:
    """A screenshot of the page, ``height`` pixels tall (the page scrolls inside its own pane),
    with the element ``top`` at the top of the picture."""
    if height:
        page.set_viewport_size({"width": WINDOW["width"], "height": height})
    if top is not None:
        top.evaluate("e => e.scrollIntoView({block: 'start'})")
    if height or top is not None:
        page.wait_for_timeout(300)  # the layout settles after resizing or scrolling (nothing to poll for)
    first = None
    for folder in folders:
        path = folder / name
        page.screenshot(path=str(path))
        first = first or path
    if height:
        page.set_viewport_size(WINDOW)
    return first


def _idle(page, timeout: float = 60_000) -> None:
    """Wait until the app has finished running its script (Streamlit's status widget is gone)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && document.querySelectorAll('[data-stale=\"true\"]').length === 0", timeout=timeout)


def _field(page, path: str):
    """The input of a form field, found by the key it was given: Streamlit marks each keyed element with
    the class ``st-key-<key>`` (other characters than letters, digits, ``-`` and ``_`` as ``-``), and the
    form's keys end with the field's scenario path (the Run page's with their own names)."""
    tail = "-" + path.replace(".", "-")
    return page.locator(f"xpath=//*[starts-with(@class, 'st-key-') or contains(@class, ' st-key-')]"
                        f"[contains(concat(' ', normalize-space(@class), ' '), '{tail} ')]//input").first


def _set(page, path: str, value) -> None:
    _fill(_field(page, path), value)


def _fill(box, value) -> None:
    page = box.page
    box.scroll_into_view_if_needed()
    box.fill(str(value))
    box.press("Tab")
    _idle(page)


def _start(page, sidebar, name: str, done_heading: str) -> None:
    """Open the page ``name``, ask for 2 replications on 1 worker, press its button and wait for ``done_heading``."""
    sidebar.get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=name, exact=True).wait_for(timeout=30_000)
    _idle(page)
    _fill(page.get_by_role("spinbutton", name="Replications", exact=True), 2)
    _fill(page.get_by_role("spinbutton", name="Worker processes", exact=True), 1)
    page.get_by_role("button", name=name, exact=True).click()
    page.get_by_role("heading", name=done_heading).wait_for(timeout=RUN * 1000)
    _idle(page)


def test_a_new_user_describes_a_site_runs_it_and_downloads_the_report(server, browser, tmp_path):  # noqa: F811 (the imported fixture)
    outside: list[str] = []
    problems: list[str] = []
    context = browser.new_context(viewport=WINDOW, accept_downloads=True)
    page = context.new_page()
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((server["url"], f"ws://127.0.0.1:{server['port']}", "data:", "blob:")) else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    shots = _shots(tmp_path)
    try:
        page.goto(server["url"], wait_until="domcontentloaded")
        page.get_by_role("heading", name="Describe the site").wait_for(timeout=60_000)
        _field(page, "referrals.referrals_per_week").wait_for(timeout=60_000)
        _idle(page)
        # their site: 8 referrals a week, three counselors (two day, one late), the two groups it has
        _set(page, "name", "my-site")
        _set(page, "referrals.referrals_per_week", 8)
        _set(page, "staff.roles.counselor.teams.0.headcount", 2)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("3 changes").wait_for(timeout=30_000)
        assert _field(page, "stages.iop.tracks.day.groups").input_value() == "1"
        assert _field(page, "stages.iop.tracks.evening.groups").input_value() == "1"
        # a wrong value is answered in the CLI's words, next to the field, and can be put right
        _set(page, "staff.roles.counselor.teams.1.headcount", 0)
        msg = page.get_by_text("staff.roles.counselor.teams.1.headcount: Input should be greater than or equal to 1 (got 0)")
        msg.wait_for(timeout=30_000)
        _set(page, "staff.roles.counselor.teams.1.headcount", 1)
        msg.wait_for(state="detached", timeout=30_000)
        _screenshot(page, "app-describe.png", shots, height=1300,
                    top=page.get_by_role("heading", name="Describe the site"))
        _screenshot(page, "app-staff.png", shots, height=1100, top=page.get_by_role("heading", name="Staff"))

        _start(page, sidebar, "Run", "my-site: the answer")
        main = page.locator('[data-testid="stMain"]')
        text = main.inner_text()
        assert "With 1 intake clinician, 3 counselors and 1 nurse, and 2 IOP groups (day and evening)" in text, text[:3000]
        assert "of referred patients are admitted to treatment within 14 days" in text
        assert "Staff are busy" in text
        page.locator('[data-testid="stImage"] img').first.wait_for(timeout=60_000)
        page.wait_for_function("() => { const im = Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img'));"
                               " return im.length >= 5 && im.every(i => i.complete && i.naturalWidth > 0); }",
                               timeout=60_000)
        _screenshot(page, "app-results.png", shots, height=1500, top=page.get_by_role("heading", name="Run", exact=True))
        _screenshot(page, "app-tables.png", shots, height=1400,
                    top=page.get_by_role("heading", name="Results (mean and 95 % confidence interval)"))

        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download the report (report.html)").click()
        saved = tmp_path / "report.html"
        download.value.save_as(saved)
        report = saved.read_text(encoding="utf-8")
        assert "3 counselors" in report and "data:image/png;base64," in report

        folders = [p for p in (server["folder"] / "outputs").iterdir() if p.name.startswith("my-site-")]
        assert len(folders) == 1 and (folders[0] / "report.html").is_file()
        assert f"outputs/{folders[0].name}" in text

        # their site against the baseline it started from, on the same simulated patients
        _start(page, sidebar, "Compare", "The verdict")
        verdict = main.inner_text()
        assert "my-site" in verdict and "decisive measures" in verdict, verdict[:2000]
        _screenshot(page, "app-compare.png", shots, height=1400, top=page.get_by_role("heading", name="Compare", exact=True))

        sidebar.get_by_text("Plan", exact=True).click()
        page.get_by_role("heading", name="Levers: what the planner may choose").wait_for(timeout=30_000)
        _idle(page)
        _screenshot(page, "app-plan.png", shots, height=1300, top=page.get_by_role("heading", name="Plan", exact=True))
    finally:
        context.close()
    assert not outside, f"the app fetched from outside: {outside[:5]}"
    assert not problems, f"errors in the page: {problems[:5]}"
    shot = tmp_path / "app-results.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000, "blank screenshot"
