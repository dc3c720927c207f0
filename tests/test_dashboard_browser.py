"""The dashboard in a real browser (Debian's chromium, driven by Playwright) during a
real run: a new experiment appears without a reload, a diff opens, a keep approved on
the page is in the journal's audit table, a rationale holding `<script>` shows as text.

The run page's screenshot and the run's progress.png are kept as test artifacts (in
$RATCHET_TEST_ARTIFACTS when set, else in the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import wait_for, wait_until

from conftest import GIT_ENV, git
from view_support import HOSTILE, start_dashboard, stop, view_project

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
WAIT_MS = 120_000  # a loaded machine starts chromium slowly

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) or shutil.which("chromium") is None,
    reason="chromium is not installed (apt-get install -y --no-install-recommends chromium)",
)


def rows(project: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    try:
        db = sqlite3.connect(project / ".ratchet" / "journal.db")
        try:
            return db.execute(query, args).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:  # the run has not written its schema yet
        return []


def wait_for_decision(project: Path, experiment: int, run: subprocess.Popen[str]) -> str:
    """Wait on the journal until `experiment` is decided; its decision."""

    def decision() -> str | None:
        found = rows(project, "SELECT decision FROM experiments WHERE id = ?", experiment)
        return str(found[0][0]) if found and found[0][0] is not None else None

    wait_until(lambda: decision() is not None or run.poll() is not None,
               f"experiment #{experiment} to be decided", 240)  # fmt: skip
    decided = decision()
    assert decided is not None, run.stderr.read() if run.stderr else ""
    return decided


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("RATCHET_TEST_ARTIFACTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A run (`--report`) whose proposals wait on gate files, and its dashboard."""
    tmp = tmp_path_factory.mktemp("browser")
    gate = tmp / "gate"
    gate.mkdir()
    project = view_project(tmp, max_experiments=3, gate=gate)
    git(project, "config", "user.name", "Lead Person")
    git(project, "config", "user.email", "lead@example.com")
    (gate / "go-0").touch()
    run = subprocess.Popen([sys.executable, "-m", "ratchet", "run", "--report"], cwd=project,
                           env={**os.environ, **GIT_ENV}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    dashboard = None
    try:
        assert wait_for_decision(project, 2, run) == "keep"
        dashboard, url = start_dashboard(project)
        yield {"project": project, "gate": gate, "run": run, "url": url}
    finally:
        for n in range(3):
            (gate / f"go-{n}").touch()
        if dashboard is not None:
            stop(dashboard)
        run.wait(timeout=240)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def test_a_new_experiment_appears_without_a_reload(live: dict[str, Any], browser: Any,
                                                   artifacts: Path) -> None:  # fmt: skip
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{live['url']}/runs/default")
    page.wait_for_selector("#live.on")
    page.wait_for_selector('#recent tr[data-experiment="2"]')
    assert page.locator("#count-keeps").text_content() == "1"
    assert page.locator("#chart svg circle.kept").count() == 2  # the baseline and #2
    page.evaluate("window.sameDocument = true")
    # experiment #3 is proposing: the slot is shown with its budget bar
    page.wait_for_selector("#slots .slot .bar")
    assert "#3 proposing" in (page.locator("#slots .slot").first.text_content() or "")
    (live["gate"] / "go-1").touch()  # let #3 (X = 3, a keep) through
    page.wait_for_selector('#recent tr[data-experiment="3"]')
    assert page.evaluate("window.sameDocument") is True  # no reload happened
    assert "keep" in (page.locator('#recent tr[data-experiment="3"]').text_content() or "")
    expect(page.locator("#count-keeps")).to_have_text("2", timeout=WAIT_MS)
    assert page.locator("#chart svg circle.kept").count() == 3
    assert page.locator('#keeps .review[data-experiment="3"]').count() == 1
    page.screenshot(path=str(artifacts / "dashboard-run.png"), full_page=True)
    assert (artifacts / "dashboard-run.png").stat().st_size > 10_000
    page.close()


def test_a_rationale_holding_script_shows_as_text(live: dict[str, Any], browser: Any) -> None:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{live['url']}/runs/default")
    page.wait_for_selector('#keeps .review[data-experiment="2"]')
    shown = page.locator('#keeps .review[data-experiment="2"] .rationale').text_content()
    assert shown == "X to 4: " + HOSTILE
    page.goto(f"{live['url']}/experiments/2")
    assert page.locator("#rationale").text_content() == "X to 4: " + HOSTILE
    assert page.evaluate("window.pwned") is None  # neither the script nor onerror ran
    assert page.locator("main script, main img").count() == 0
    page.close()


def test_an_experiments_diff_opens(live: dict[str, Any], browser: Any) -> None:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{live['url']}/runs/default")
    page.click('#recent tr[data-experiment="2"] a')
    page.wait_for_url("**/experiments/2")
    added = page.locator("#diff pre.diff .add")
    assert not added.first.is_visible()  # folded until asked for
    page.click("#diff summary")
    assert added.first.is_visible() and added.first.text_content() == "+X = 4"
    assert page.locator("#diff pre.diff .remove").first.text_content() == "-X = 5"
    page.close()


def test_a_keep_approved_on_the_page_is_audited(live: dict[str, Any], browser: Any) -> None:
    project = live["project"]
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{live['url']}/runs/default")
    box = page.locator('#keeps .review[data-experiment="2"]')
    box.locator(".note").fill("checked on the page")
    box.locator("button.approve").click()
    # the page's CSP forbids eval: waits go through locators, not wait_for_function
    expect(box.locator(".result")).to_have_text("approved by Lead Person <lead@example.com>",
                                                timeout=WAIT_MS)  # fmt: skip
    audit = rows(project, "SELECT event, detail FROM audit WHERE event = 'approved'")
    details = [json.loads(d) for _, d in audit]
    assert [(d["experiment"], d["note"], d["who"]) for d in details] == [
        (2, "checked on the page", "Lead Person <lead@example.com>")
    ]
    approvals = rows(project, "SELECT experiment, verdict FROM approvals")
    assert approvals == [(2, "approved")]
    page.close()


def test_progress_png_is_kept_beside_the_screenshot(live: dict[str, Any], artifacts: Path
                                                    ) -> None:  # fmt: skip
    """`run --report` drew the plot after the decisions so far."""
    png = live["project"] / ".ratchet" / "reports" / "default" / "progress.png"
    wait_for(png, timeout=120)  # drawn in the run's own thread
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copyfile(png, artifacts / "progress.png")
