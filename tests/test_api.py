"""The public Python API end to end: a real git project, real measurements, a Python
proposer, records streamed as they are decided, and a run stopped from another thread."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from processes import wait_until

import ratchet
from conftest import check_consistent, experiments, git
from conftest import ratchet as ratchet_cli
from ratchet.runs import lock_holder

EVENT_WAIT = 60.0  # seconds a test waits for an event before it fails


def _x(workdir: Path) -> int:
    match = re.search(r"X = (-?\d+)", (workdir / "value.py").read_text())
    assert match is not None
    return int(match.group(1))


def _running(pid: int) -> bool:
    """Whether the process runs (a zombie, killed and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone meanwhile, or no /proc (macOS): os.kill answered
        return not Path(f"/proc/{pid}").parent.exists()


def test_a_python_proposer_improves_the_metric_and_records_stream_as_decided(
    score_project: Callable[..., Path],
) -> None:
    root = score_project("true", max_experiments=10)
    seen = threading.Event()  # set by the loop below each time it receives a record
    calls: list[dict[str, Any]] = []

    def step_towards_two(workdir: Path, brief: dict[str, Any]) -> ratchet.Proposal:
        # the record of the previous decision reached the caller before this proposal:
        # records are streamed as decided, not handed over when the run ends
        assert seen.wait(EVENT_WAIT), "the previous record was not yielded"
        seen.clear()
        calls.append(brief)
        x = _x(workdir)
        (workdir / "value.py").write_text(f"X = {x - 1}\n")
        return ratchet.Proposal(f"X from {x} to {x - 1}")

    project = ratchet.Project(root)
    assert project.root == root
    assert project.runs() == []
    records = []
    with project.run("night-1", max_experiments=3, proposer=step_towards_two) as run:
        for record in run:
            assert run.experiments()[-1].id >= record.id  # in the journal already
            records.append(record)
            seen.set()
    stopped = run.wait()
    assert stopped.reason == "reached max_experiments (3)"
    assert [r.decision for r in records] == [ratchet.Decision.KEEP] * 4
    assert records[0].is_baseline and not any(r.is_baseline for r in records[1:])
    assert [r.value for r in records] == [9.0, 4.0, 1.0, 0.0]
    assert records[1].proposer == "python:step_towards_two"
    assert records[1].rationale == "X from 5 to 4"
    assert all(r.decision.category is ratchet.Category.KEPT for r in records)
    assert calls[0]["incumbent"]["value"] == 9.0  # the brief, as a dict
    assert git(root, "show", "ratchet/night-1:value.py") == "X = 2"
    assert [r.name for r in project.runs()] == ["night-1"]
    assert [r.id for r in project.run("night-1").experiments()] == [r.id for r in records]
    assert stopped.incumbent is not None and stopped.incumbent.id == records[-1].id
    check_consistent(root, "night-1")
    assert lock_holder(root / ".ratchet") is None

    report = project.noise(repeats=3, name="night-1")
    assert report.experiment == records[-1].id
    assert report.mean == 0.0 and report.n >= 3

    # the command line reads what the API wrote; the baseline is no keep there either
    status = json.loads(ratchet_cli(root, "status", "--json", "--name", "night-1").stdout)
    assert status["keeps"] == 3 and status["decisions"] == {"keep": 3}
    assert status["categories"] == {"kept": 3}


def test_a_python_proposer_that_raises_is_an_invalid_proposal(
    score_project: Callable[..., Path],
) -> None:
    root = score_project("true", max_experiments=10)
    attempts = []

    class Search:
        """An object proposer: told every outcome."""

        def __init__(self) -> None:
            self.outcomes: list[ratchet.Outcome] = []

        def propose(self, workdir: Path, brief: dict[str, Any]) -> ratchet.Proposal:
            attempts.append(brief)
            if len(attempts) == 1:
                raise RuntimeError("no idea yet")
            if len(attempts) == 2:
                return "not a proposal"  # type: ignore[return-value]
            (workdir / "value.py").write_text("X = 3\n")
            return ratchet.Proposal("X = 3")

        def observe(self, outcome: ratchet.Outcome) -> None:
            self.outcomes.append(outcome)

    search = Search()
    run = ratchet.Project(root).run(max_experiments=3, proposer=search)
    records = list(run)
    assert [r.decision for r in records] == ["keep", "invalid-proposal", "invalid-proposal",
                                             "keep"]  # fmt: skip
    assert records[1].why == "the proposer failed: RuntimeError: no idea yet"
    assert records[2].why == "the proposer returned str, not a ratchet.Proposal"
    assert records[1].decision.category is ratchet.Category.REFUSED
    assert [o.decision for o in search.outcomes] == ["invalid-proposal", "invalid-proposal", "keep"]
    assert records[1].proposer == "python:Search"


SLOW_SCORE = """
import os, sys, time
from pathlib import Path
from value import X
marks = Path(os.environ["MARKS"])
(marks / f"measuring-{{X}}-{{os.getpid()}}").touch()
if X != 5:  # the baseline is quick; every candidate waits to be stopped
    time.sleep(60)
print(f"score: {{(X - 2) ** 2}}")
"""


def test_a_run_in_a_worker_thread_stops_cleanly_from_the_main_thread(
    score_project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("MARKS", str(marks))
    root = score_project(
        "true",
        max_experiments=50,
        files={"score.py": SLOW_SCORE.format()},
        sandbox_extra='allow_env = ["MARKS"]',
    )

    def propose(workdir: Path, brief: dict[str, Any]) -> ratchet.Proposal:
        (workdir / "value.py").write_text("X = 4\n")
        return ratchet.Proposal("X = 4")

    run = ratchet.Project(root).run("worker", proposer=propose)
    received: list[ratchet.ExperimentRecord] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with run:
                received.extend(run)
        except BaseException as error:  # the main thread asserts on it
            failures.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    wait_until(lambda: bool(list(marks.glob("measuring-4-*"))), "the candidate's measurement",
               EVENT_WAIT)  # fmt: skip
    run.stop()
    thread.join(EVENT_WAIT)
    assert not thread.is_alive() and failures == []
    stopped = run.wait()
    assert stopped.reason == "stopped by Run.stop()"
    rows = experiments(root)
    assert [r["decision"] for r in rows] == ["keep", "interrupted"]
    assert rows[1]["why"].startswith("stopped by Run.stop() while the experiment was in flight")
    assert [r.decision for r in received] == ["keep", "interrupted"]
    check_consistent(root, "worker")
    assert lock_holder(root / ".ratchet") is None  # the lock was let go
    # the measurement was killed, not left running: its process is gone
    pid = int(next(marks.glob("measuring-4-*")).name.rsplit("-", 1)[1])
    assert not _running(pid)
    # and the run resumes from the command line
    again = ratchet_cli(root, "status", "--json", "--name", "worker")
    assert json.loads(again.stdout)["decisions"] == {"interrupted": 1}


def test_a_second_run_is_refused_in_the_calling_thread(
    score_project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("MARKS", str(marks))
    root = score_project("true", max_experiments=5, files={"score.py": SLOW_SCORE.format()},
                         sandbox_extra='allow_env = ["MARKS"]')  # fmt: skip

    def propose(workdir: Path, brief: dict[str, Any]) -> ratchet.Proposal:
        (workdir / "value.py").write_text("X = 4\n")
        return ratchet.Proposal("X = 4")

    project = ratchet.Project(root)
    with project.run("first", proposer=propose) as first:
        with pytest.raises(ratchet.RunLocked, match="run 'first' is running in this project"):
            project.run("second", proposer=propose).start()
        first.stop()
    assert first.wait().reason == "stopped by Run.stop()"
    db = sqlite3.connect(root / ".ratchet" / "journal.db")
    assert [r[0] for r in db.execute("SELECT name FROM runs")] == ["first"]  # nothing else
    db.close()


def test_a_project_outside_git_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ratchet.UsageError):
        ratchet.Project(tmp_path)


def test_import_ratchet_is_cheap() -> None:
    """The API's names load on first use: importing the package imports no engine."""
    import subprocess

    code = "import sys, ratchet; print(sorted(m for m in sys.modules if m.startswith('ratchet')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ratchet']"
