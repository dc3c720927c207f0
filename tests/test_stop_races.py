"""A stop (Ctrl-C, SIGTERM, `Run.stop()`) ends what the slots wait for, whenever it comes:
a command started just as the stop came (before its pidfile was written), an `llm`
proposal waiting out its endpoint's back-off, and a SIGTERM during the baseline, after
which the next `ratchet run` resumes cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from processes import read_pid, wait_dead, wait_for

from conftest import GIT_ENV, check_consistent, experiments, git, ratchet
from ratchet.proposers import ProposalError, ProposerContext
from ratchet.proposers.llm import LLMProposer
from ratchet.proposers.providers import BACKOFF
from ratchet.sandbox import ProcessSandbox, kill_leftover, pidfile_for
from ratchet.sandbox.process import run_process
from ratchet.scheduler import Scheduler, Stopped
from ratchet.spec import parse_spec

PY = sys.executable
DECREMENT = (
    f"{PY} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n'); print(f'X to {x - 1}')\""
)


def test_a_command_started_as_the_stop_came_is_killed(tmp_path: Path) -> None:
    """The stop's first kill finds no pidfile (the command is not started yet); the
    command that starts just after must not run to its budget, nor outlive the run."""
    scheduler = Scheduler()
    worktree = tmp_path / "0"
    worktree.mkdir()
    pidfile = pidfile_for(worktree)
    kills: list[bool] = []
    results = []

    def interrupt() -> None:
        kills.append(kill_leftover(pidfile))

    def next_experiment(slot: int) -> bool:
        scheduler.stop("SIGINT")  # the stop comes first: nothing to kill yet
        assert kills and not any(kills)  # (the scheduler may have repeated it already)
        results.append(run_process("sleep 30", worktree, dict(os.environ),
                                   budget=25, pidfile=pidfile))  # fmt: skip
        return True

    started = time.monotonic()
    with pytest.raises(Stopped):
        scheduler.run(1, next_experiment, interrupt)
    [result] = results
    assert time.monotonic() - started < 15  # killed, not run to its 25 s budget
    assert result.returncode == -signal.SIGKILL and not result.timed_out
    assert True in kills  # a later kill found its pidfile
    assert not pidfile.exists()


def test_a_back_off_wait_ends_at_a_stop(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # the host answers: the run starts
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    (tmp_path / "value.py").write_text("X = 1\n")
    spec = parse_spec(
        {"scope": {"editable": ["value.py"]}, "metric": {"command": "x", "name": "score"},
         "proposer": {"kind": "llm", "model": "m", "base_url": url, "budget": "120s"}},
        "t",
    )  # fmt: skip
    context = ProposerContext(spec, tmp_path, tmp_path, ["value.py"], [], ProcessSandbox(),
                              tmp_path)  # fmt: skip
    proposer = LLMProposer(context)
    brief = tmp_path / "brief.json"
    brief.write_text(json.dumps({"history": []}))
    BACKOFF.failed(url)  # then lost: the next proposal waits out 15 s or more first
    errors: list[BaseException] = []

    def propose() -> None:
        try:
            proposer.propose(tmp_path, brief)
        except BaseException as error:  # asserted below
            errors.append(error)

    worker = threading.Thread(target=propose)
    started = time.monotonic()
    try:
        worker.start()
        while worker.is_alive():  # a stop repeats its interrupt until the slots end
            BACKOFF.interrupt()
            worker.join(0.05)
            assert time.monotonic() - started < 10, "the back-off wait did not end"
    finally:
        BACKOFF.reached(url)
        listener.close()
    [error] = errors
    assert isinstance(error, ProposalError)
    assert f"stopped while waiting out the back-off of the model's endpoint {url}" in str(error)


def test_sigterm_during_the_baseline_then_the_next_run_resumes(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    flag, pidfile = tmp_path / "flag", tmp_path / "pid"
    hang = f"if [ ! -f {flag} ]; then echo $$ > {pidfile}; touch {flag}; sleep 60; fi\n"
    project = score_project(DECREMENT, max_experiments=2, files={"measure.sh": hang})
    spec = (project / "ratchet.toml").read_text()
    spec = spec.replace(f'command = "{PY} score.py"', f'command = "sh measure.sh && {PY} score.py"')
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "measure through a script")
    proc = subprocess.Popen(
        [PY, "-m", "ratchet", "run"], cwd=project, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **GIT_ENV},
    )  # fmt: skip
    wait_for(flag)  # the baseline's measurement is running
    hung = read_pid(pidfile)
    proc.send_signal(signal.SIGTERM)  # ratchet alone, as `kill PID` sends it
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert wait_dead(hung)  # the stop killed the measurement: nothing left to the next start
    [baseline] = experiments(project)
    assert (baseline["proposer"], baseline["decision"]) == ("baseline", "interrupted")
    assert "SIGTERM" in (baseline["why"] or "")
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = experiments(project)
    assert [(r["proposer"], r["decision"]) for r in rows[:2]] == [
        ("baseline", "interrupted"),
        ("baseline", "keep"),
    ]
    assert "score: baseline 9 -> best" in result.stdout
    check_consistent(project)
