"""`ratchet report` and `ratchet run --report`: progress.png and report.md from a real run."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from processes import wait_until

from conftest import GIT_ENV, ratchet
from view_support import HOSTILE, view_project


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of six experiments, with `--report`: keeps, a discard, a crash."""
    project = view_project(tmp_path_factory.mktemp("report"))
    result = ratchet(project, "run", "--report", timeout=300)
    assert result.returncode == 0, result.stderr
    return project


def rows(project: Path, query: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def proposing(project: Path, experiment: int) -> bool:
    """Whether the journal shows `experiment` waiting on its proposal."""
    try:
        found = rows(project, f"SELECT COUNT(*) FROM experiments WHERE id = {experiment}"
                              " AND stage = 'proposing'")  # fmt: skip
    except sqlite3.OperationalError:  # the run has not written its schema yet
        return False
    return bool(found[0][0])


def pixels(path: Path) -> tuple[int, int, set[tuple[int, int, int]]]:
    """Width, height and the set of colours of a PNG."""
    from matplotlib.image import imread

    image = imread(path)
    height, width = image.shape[:2]
    colours = {tuple(int(c * 255) for c in px[:3]) for px in image.reshape(-1, image.shape[2])}
    return width, height, colours


def near(colours: set[tuple[int, int, int]], target: tuple[int, int, int]) -> bool:
    return any(sum(abs(a - b) for a, b in zip(c, target, strict=True)) < 12 for c in colours)


def test_run_report_draws_progress_png_as_the_run_goes(finished: Path) -> None:
    png = finished / ".ratchet" / "reports" / "default" / "progress.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, colours = pixels(png)
    assert width >= 1200 and height >= 700  # large enough to read on a phone, zoomed
    assert near(colours, (0x1A, 0x98, 0x50))  # the keeps and the running best
    assert near(colours, (0xD7, 0x30, 0x27))  # the crash, marked apart
    assert near(colours, (0x45, 0x75, 0xB4))  # the baseline line
    assert len(colours) > 50  # a drawn chart, not an empty canvas


def test_report_writes_the_run_from_the_journal(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = ratchet(finished, "report", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "progress.png").stat().st_size > 20_000
    text = (out / "report.md").read_text()
    artifacts = os.environ.get("RATCHET_TEST_ARTIFACTS")
    if artifacts:  # CI keeps the figure and the report
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for name in ("progress.png", "report.md"):
            (Path(artifacts) / name).write_bytes((out / name).read_bytes())
    keeps = rows(finished, "SELECT id, value FROM experiments WHERE decision = 'keep'"
                           " AND proposer != 'baseline' ORDER BY id")  # fmt: skip
    assert [v for _, v in keeps] == [4, 1, 0]
    assert "- baseline: 9 (experiment #1)" in text
    assert f"- best: 0 (experiment #{keeps[-1][0]}" in text
    assert "smallest detectable improvement" in text
    assert "- noise: sd 0 of one measurement" in text  # a deterministic metric
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert [int(line.split("|")[1]) for line in table] == [k for k, _ in keeps]
    assert [line.split("|")[4].strip() for line in table] == ["-5", "-3", "-1"]  # deltas
    assert all("| pending |" in line for line in table)
    assert "| discard | rejected | 2 |" in text and "| crash | failed to measure | 1 |" in text
    assert "- experiments: 6 decided, 3 kept, 2 since the last keep" in text
    # the hostile rationale is text: no raw tag, no unescaped table separator
    assert "<script>" not in text and "\\<script\\>" in text
    assert all(line.count("|") - line.count("\\|") == 9 for line in table)
    assert HOSTILE.split(" ")[0] not in text


def test_review_state_reaches_the_report(finished: Path, tmp_path: Path) -> None:
    first = rows(finished, "SELECT MIN(id) FROM experiments WHERE decision = 'keep'"
                           " AND proposer != 'baseline'")[0][0]  # fmt: skip
    done = ratchet(finished, "review", "approve", str(first), "--note", "checked <b>by hand</b>")
    assert done.returncode == 0, done.stderr
    result = ratchet(finished, "report", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines()
                if x.startswith(f"| {first} |"))  # fmt: skip
    assert "approved: checked \\<b\\>by hand\\</b\\>" in line


def test_report_reads_the_journal_while_a_run_goes_on(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    project = view_project(tmp_path, max_experiments=2, gate=gate)
    (gate / "go-0").touch()  # the first proposal passes; the second waits on the gate
    run = subprocess.Popen([sys.executable, "-m", "ratchet", "run"], cwd=project,
                           env={**os.environ, **GIT_ENV}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # waiting on the journal: the second proposal's row, stage proposing
        wait_until(lambda: proposing(project, 3) or run.poll() is not None,
                   "the run to reach its second proposal", 240)  # fmt: skip
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        result = ratchet(project, "report")
        assert result.returncode == 0, result.stderr
        text = (project / ".ratchet" / "reports" / "default" / "report.md").read_text()
        assert "The run is going on: 1 experiment(s) in flight" in text
        assert "- experiments: 1 decided, 1 kept" in text
    finally:
        (gate / "go-1").touch()
        assert run.wait(timeout=240) == 0


def test_a_plot_that_fails_never_stops_the_run(tmp_path: Path) -> None:
    """The refresher on a project without a journal: each draw fails, it says so once."""
    from ratchet.events import ExperimentDecided
    from ratchet.report import ProgressRefresher

    warn = io.StringIO()
    refresher = ProgressRefresher(tmp_path, None, "default", warn=warn, every=0.0)  # type: ignore[arg-type]
    event = ExperimentDecided(None, None)  # type: ignore[arg-type]
    for _ in range(3):
        refresher(event)
    refresher.close()
    assert refresher.drawn == 0 and refresher.failure is not None
    assert warn.getvalue().count("progress.png not drawn") == 1


def test_report_of_an_unknown_run_is_a_one_line_error(finished: Path) -> None:
    result = ratchet(finished, "report", "--run", "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == "ratchet: error: no run named 'nope' (runs: default)"


def test_holdout_line_and_gap_where_recorded(finished: Path, tmp_path: Path) -> None:
    """A run whose best has a holdout value: its line on the plot, its gap in the report."""
    from dataclasses import replace

    from ratchet import runview
    from ratchet.project import Project
    from ratchet.report import collect, plot_progress, render_markdown

    with runview.reading(finished) as journal:
        report = collect(journal, "default", Project(finished).spec)
    assert report.incumbent is not None and report.holdout_gap is None
    without = plot_progress(report, tmp_path / "without.png")
    held = replace(report, incumbent=replace(report.incumbent, holdout=0.5))
    with_holdout = plot_progress(held, tmp_path / "with.png")
    purple = (0x7B, 0x32, 0x94)
    assert not near(pixels(without)[2], purple) and near(pixels(with_holdout)[2], purple)
    assert "- holdout: 0.5 for the best (search 0), gap +0.5" in render_markdown(held)
    assert "- holdout:" not in render_markdown(report)
