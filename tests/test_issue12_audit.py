"""Issue 12 as an outside tester would try it, where the other tests left a gap: a killed
baseline resumed on the commit the user made since, a run held through the Python API
refusing one from the command line, the API exactly as the issue writes it (the spec's
own proposer, `Project(".")`, `noise(repeats=10)`), and every reading command's output
unwrapped when it is not a terminal. Real repositories, real `ratchet` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from processes import read_pid, wait_dead, wait_for

import ratchet
from conftest import GIT_ENV, check_consistent, experiments, git
from conftest import ratchet as ratchet_cli

PY = sys.executable
EVENT_WAIT = 60.0  # seconds a test waits for an event before it fails
# each experiment moves X one closer to 2: every candidate is a keep until X = 2
DECREMENT = (
    f"{PY} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n'); print(f'X to {x - 1}')\""
)


def test_a_killed_baseline_is_measured_again_on_the_commit_the_user_made_since(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    """`kill -9` (with the measurement's group) while the baseline is measured; the user
    then commits a change; the resumed run measures its baseline on that new commit."""
    flag, pidfile = tmp_path / "flag", tmp_path / "pid"
    hang_once = f"if [ ! -f {flag} ]; then echo $$ > {pidfile}; touch {flag}; sleep 60; fi\n"
    project = score_project(DECREMENT, max_experiments=1, files={"measure.sh": hang_once})
    spec = (project / "ratchet.toml").read_text()
    spec = spec.replace(f'command = "{PY} score.py"', f'command = "sh measure.sh && {PY} score.py"')
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "measure through a script")
    old_head = git(project, "rev-parse", "HEAD")
    proc = subprocess.Popen([PY, "-m", "ratchet", "run"], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **GIT_ENV},
                            start_new_session=True)  # fmt: skip
    wait_for(flag)
    hung = read_pid(pidfile)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert [(r["proposer"], r["decision"]) for r in experiments(project)] == [("baseline", None)]
    # the user's change since: X = 4 makes the baseline's score 4, not 9
    (project / "value.py").write_text("X = 4\n")
    git(project, "commit", "-qam", "start from X = 4")
    new_head = git(project, "rev-parse", "HEAD")
    result = ratchet_cli(project, "run")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert wait_dead(hung)  # the orphaned measurement of the old baseline was killed
    rows = experiments(project)
    assert [(r["proposer"], r["decision"]) for r in rows] == [
        ("baseline", "interrupted"),
        ("baseline", "keep"),
        ("command", "keep"),
    ]
    assert rows[1]["commit_sha"] == new_head and rows[1]["value"] == 4
    assert git(project, "rev-parse", "ratchet/default~1") == new_head
    assert git(project, "show", "ratchet/default:value.py") == "X = 3"
    status = json.loads(ratchet_cli(project, "status", "--json").stdout)
    assert status["baseline"] == 4
    assert old_head != new_head
    check_consistent(project)


def test_a_run_held_by_the_api_refuses_the_command_line_in_one_line(
    score_project: Callable[..., Path],
) -> None:
    """The lock is the same across the API and the CLI: a `ratchet run` (another name too)
    while this process runs one gets one line naming the run and this process, exit 2."""
    root = score_project("true", max_experiments=1)
    # the proposal waits for the eight commands below: a budget a loaded machine cannot reach
    spec = (root / "ratchet.toml").read_text().replace('budget = "20s"\n', 'budget = "600s"\n')
    (root / "ratchet.toml").write_text(spec)
    git(root, "commit", "-qam", "the proposer gets 600s")
    proposing, release = threading.Event(), threading.Event()

    def wait_then_step(workdir: Path, brief: dict[str, Any]) -> ratchet.Proposal:
        proposing.set()
        assert release.wait(590)
        (workdir / "value.py").write_text("X = 3\n")
        return ratchet.Proposal("X = 3")

    project = ratchet.Project(root)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with project.run("api-run", proposer=wait_then_step) as run:
        try:
            assert proposing.wait(EVENT_WAIT), "the run never asked for a proposal"
            # signal handling is the caller's (the CLI's): the engine installed none
            assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
            for args in (("run",), ("run", "--name", "api-run"), ("noise", "--repeats", "2")):
                refused = ratchet_cli(root, *args)
                assert refused.returncode == 2, (args, refused.stderr)
                lines = refused.stderr.strip().splitlines()
                assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
                assert (
                    f"run 'api-run' is running in this project (process {os.getpid()})"
                    in (lines[0])
                )
            for args in (("status", "--name", "api-run"), ("log", "--name", "api-run"),
                         ("show", "1"), ("review", "--name", "api-run"),
                         ("report", "--run", "api-run")):  # fmt: skip
                read = ratchet_cli(root, *args)
                assert read.returncode == 0, (args, read.stderr)
        finally:
            release.set()
        records = list(run)
    assert [r.decision for r in records] == ["keep", "keep"]
    assert [r.name for r in project.runs()] == ["api-run"]  # the refused ones added nothing
    check_consistent(root, "api-run")


def test_the_api_as_the_issue_writes_it(
    score_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Project(".")` from the working folder, a run with the spec's own (command)
    proposer, records with id/decision/value/why, `runs()`, `experiments()`, `noise()`."""
    root = score_project(DECREMENT, max_experiments=1)
    monkeypatch.chdir(root)
    project = ratchet.Project(".")
    assert project.root.resolve() == root.resolve()
    seen = []
    with project.run("night-1", max_experiments=3) as run:
        for record in run:
            seen.append((record.id, record.decision, record.value, record.why))
    assert [(i, d, v) for i, d, v, _ in seen] == [
        (
            1,
            ratchet.Decision.KEEP,
            9.0,
        ),
        (2, ratchet.Decision.KEEP, 4.0),
        (3, ratchet.Decision.KEEP, 1.0),
        (4, ratchet.Decision.KEEP, 0.0),
    ]
    assert all(isinstance(why, str) and why for *_, why in seen)
    assert [r.name for r in project.runs()] == ["night-1"]
    assert [r.id for r in project.run("night-1").experiments()] == [1, 2, 3, 4]
    report = project.noise(repeats=10, name="night-1")  # the incumbent, X = 2
    assert report.n >= 10 and report.mean == 0.0 and report.experiment == 4
    # without a name, as in the issue: the spec's run ("default"), measured at its base
    fresh = project.noise(repeats=10)
    assert fresh.n >= 10 and fresh.mean == 9.0
    assert {r.name for r in project.runs()} == {"night-1", "default"}
    # from a folder inside the project, and a bad spec is a one-line UsageError
    (root / "sub").mkdir()
    assert ratchet.Project(root / "sub").root.resolve() == root.resolve()
    (root / "ratchet.toml").write_text("[metric]\nname = 3\n")
    git(root, "commit", "-qam", "break the spec")
    with pytest.raises(ratchet.UsageError) as bad:
        ratchet.Project(".")
    assert "\n" not in str(bad.value) and "ratchet.toml" in str(bad.value)


LONG = "the loss curve flattened early so a smaller step may help the last third " * 4


def test_every_command_is_unwrapped_and_uncoloured_when_not_a_terminal(
    score_project: Callable[..., Path],
) -> None:
    """`run`, `status`, `log`, `show`, `review`, `noise` piped: a 300-character rationale
    on one line, no escape codes, even with a narrow COLUMNS and a colour TERM."""
    propose = f"{DECREMENT}; echo '{LONG.strip()}'"
    project = score_project(propose, max_experiments=2)
    env = {"NO_COLOR": "", "FORCE_COLOR": "", "COLUMNS": "40", "TERM": "xterm-256color"}
    outputs = {}
    for args in (("run",), ("status",), ("log",), ("show", "2"), ("review",),
                 ("noise", "--repeats", "2"), ("doctor",)):  # fmt: skip
        done = ratchet_cli(project, *args, env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert "\x1b[" not in done.stdout, args
        outputs[args[0]] = done.stdout
        # no line of it was cut at the 40 columns COLUMNS asks for
        assert any(len(line) > 40 for line in done.stdout.splitlines()), (args, done.stdout)
    for command in ("show", "review"):  # the rationale, whole, on one line
        assert any(LONG.strip() in line for line in outputs[command].splitlines()), (
            command,
            outputs[command],
        )
    for row in experiments(project):  # `log`: every why, whole, on one line
        assert any(row["why"] in line for line in outputs["log"].splitlines()), outputs["log"]
    # `run` names what each experiment tried, cut at 120 characters but never wrapped
    tried = [line for line in outputs["run"].splitlines() if line.startswith("#2 keep")]
    assert len(tried) == 1 and LONG.strip()[:100] in tried[0], outputs["run"]


def test_the_api_is_typed_for_its_users() -> None:
    """PEP 561: without `py.typed` a user's type checker skips the installed package
    ("missing library stubs or py.typed marker") and every API value is Any."""
    assert Path(ratchet.__file__).with_name("py.typed").is_file()
