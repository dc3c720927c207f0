"""The local runner on each sandbox layer: Harbor's absolute paths under bwrap, the
process layer's variables and what it cannot run, and the secrets the agent gets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from processes import alive, read_pid, wait_dead
from suite_support import command_proposer, task_files, trial_rows

from conftest import GIT_ENV, experiments, layer_or_skip, make_project, ratchet, write_files

# an agent with no model: the environment decides what it writes
AGENT = """
import os


def run(instruction, workspace):
    seen = "allowed" if os.environ.get("ALLOWED_TOKEN") == "tok-allowed-123" else "no-allowed"
    leaked = "leaked" if "OTHER_SECRET" in os.environ else "sealed"
    with open(os.path.join(workspace, "answer.txt"), "w") as handle:
        handle.write(f"{seen} {leaked} {open('data.txt').read().strip()}")
    if os.path.exists("../tests") or os.path.exists("/tests/test.sh"):
        raise SystemExit("the tests were visible to the agent")
"""
# Harbor's own paths: /tests holds the expected answer, /logs/verifier the reward
HARBOR_TEST = """#!/bin/sh
if [ "$(cat answer.txt)" = "$(cat /tests/expected.txt)" ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
"""
VARIABLE_TEST = """#!/bin/sh
if [ "$(cat answer.txt)" = "$(cat "$RATCHET_TESTS/expected.txt")" ]; then r=1; else r=0; fi
echo "{\\"reward\\": $r, \\"style\\": 0.5}" > "$RATCHET_LOGS/verifier/reward.json"
echo 0 > "$RATCHET_LOGS/verifier/reward.txt"
"""


def project(tmp_path: Path, sandbox: str, test: str) -> Path:
    spec = f"""
[sandbox]
kind = "{sandbox}"
[scope]
editable = ["agent.py"]
[suite]
tasks = "tasks"
agent = "agent.py:run"
env = ["ALLOWED_TOKEN"]
[run]
max_experiments = 1
[proposer]
{command_proposer("true")}
"""
    root = make_project(
        tmp_path / "p", {".gitignore": ".ratchet/\ntasks/\n", "agent.py": AGENT}, spec
    )
    files = task_files("t", "Answer.", test)
    files["tasks/t/tests/expected.txt"] = "allowed sealed data of t\n"
    write_files(root, files)
    return root


SECRETS = {"ALLOWED_TOKEN": "tok-allowed-123", "OTHER_SECRET": "other-secret-value"}


def test_harbor_paths_work_under_bwrap(tmp_path: Path) -> None:
    layer_or_skip("bwrap")
    root = project(tmp_path, "bwrap", HARBOR_TEST)
    result = ratchet(root, "run", env=SECRETS)
    assert result.returncode == 0, result.stderr
    trial = trial_rows(root)[0]
    assert trial["status"] == "passed", trial["error"]
    assert experiments(root)[0]["value"] == 1.0


def test_the_process_layer_offers_variables_and_reward_json_wins(tmp_path: Path) -> None:
    root = project(tmp_path, "process", VARIABLE_TEST)
    result = ratchet(root, "run", env=SECRETS)
    assert result.returncode == 0, result.stderr
    trial = trial_rows(root)[0]
    # only the secret [suite] env names reached the agent; reward.json beat reward.txt
    assert trial["status"] == "passed" and trial["reward"] == 1.0, trial["error"]
    assert "other-secret-value" not in (root / ".ratchet" / "journal.db").read_bytes().decode(
        "latin-1"
    )


def test_the_process_layer_says_it_cannot_run_harbor_paths(tmp_path: Path) -> None:
    root = project(tmp_path, "process", HARBOR_TEST)
    result = ratchet(root, "run", env=SECRETS)
    # the baseline produced no reward: the run stops (a runtime failure) and says why
    assert result.returncode == 1, result.stderr
    assert "the process layer cannot provide" in result.stdout
    trial = trial_rows(root)[0]
    assert trial["status"] == "error"
    assert "process layer cannot provide" in trial["error"]
    baseline = experiments(root)[0]
    assert baseline["decision"] == "crash" and "no trial of the search split" in baseline["why"]


def test_a_tracked_holdout_task_is_a_one_line_error(tmp_path: Path) -> None:
    spec = f"""
[scope]
editable = ["agent.py"]
[suite]
tasks = "tasks"
agent = "agent.py:run"
holdout = ["b"]
[proposer]
{command_proposer("true")}
"""
    files = {
        "agent.py": AGENT,
        **task_files("a", "A.", VARIABLE_TEST),
        **task_files("b", "B.", VARIABLE_TEST),
    }
    root = make_project(tmp_path / "p", files, spec)
    result = ratchet(root, "run")
    assert result.returncode == 2
    assert "task 'b' is tracked by git" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_metric_command_beside_a_suite_is_a_one_line_error(tmp_path: Path) -> None:
    spec = """
[scope]
editable = ["agent.py"]
[metric]
command = "python score.py"
name = "reward"
[suite]
tasks = "tasks"
agent = "agent.py:run"
"""
    root = make_project(tmp_path / "p", {"agent.py": AGENT}, spec)
    result = ratchet(root, "run")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == (
            "error: ratchet.toml [metric] command: the suite is the metric in harness mode; "
            "remove [metric] command or [suite]"
        )
        or "remove [metric] command or [suite]" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1


# writes its pid where the test can read it, then waits far past any test's patience
WAITING_AGENT = """
import os, time


def run(instruction, workspace):
    folder = os.environ["AGENT_PIDS"]
    with open(os.path.join(folder, os.environ["RATCHET_TASK"] + ".pid"), "w") as handle:
        handle.write(f"{os.getpid()}\\n")
    time.sleep(600)
"""


def test_a_stop_during_trials_kills_every_agent_and_records_the_experiment(tmp_path: Path) -> None:
    spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["agent.py"]
[suite]
tasks = "tasks"
agent = "agent.py:run"
concurrency = 2
[proposer]
{command_proposer("true")}
"""
    files = {".gitignore": ".ratchet/\ntasks/\n", "agent.py": WAITING_AGENT}
    root = make_project(tmp_path / "p", files, spec)
    write_files(root, task_files("a", "A.", VARIABLE_TEST, agent_timeout=900))
    write_files(root, task_files("b", "B.", VARIABLE_TEST, agent_timeout=900))
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ratchet", "run"], cwd=root, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, **GIT_ENV, "AGENT_PIDS": str(pids)},
    )  # fmt: skip
    try:
        agents = [read_pid(pids / "a.pid"), read_pid(pids / "b.pid")]  # both run at once
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert all(wait_dead(pid) for pid in agents)
    assert experiments(root)[0]["decision"] == "interrupted", out + err


def test_agents_a_killed_ratchet_left_running_are_killed_at_the_next_start(
    tmp_path: Path,
) -> None:
    spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["agent.py"]
[suite]
tasks = "tasks"
agent = "agent.py:run"
[run]
max_experiments = 1
[proposer]
{command_proposer("true")}
"""
    agent = WAITING_AGENT.replace(
        "    time.sleep(600)", "    if os.path.exists(os.environ['HOLD']):\n        time.sleep(600)"
    )
    root = make_project(
        tmp_path / "p", {".gitignore": ".ratchet/\ntasks/\n", "agent.py": agent}, spec
    )
    write_files(root, task_files("a", "A.", VARIABLE_TEST, agent_timeout=900))
    pids, hold = tmp_path / "pids", tmp_path / "hold"
    pids.mkdir()
    hold.write_text("wait\n")
    env = {**os.environ, **GIT_ENV, "AGENT_PIDS": str(pids), "HOLD": str(hold)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ratchet", "run"], cwd=root, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env,
    )  # fmt: skip
    orphan = read_pid(pids / "a.pid")
    os.killpg(proc.pid, signal.SIGKILL)  # the agent runs in a session of its own: it stays
    proc.communicate(timeout=30)
    try:
        assert alive(orphan)
        hold.unlink()
        (pids / "a.pid").unlink()
        result = ratchet(root, "run", env={"AGENT_PIDS": str(pids), "HOLD": str(hold)})
        assert result.returncode == 0, result.stderr
        assert wait_dead(orphan)
        assert [e["decision"] for e in experiments(root)][:2] == ["interrupted", "keep"]
    finally:
        if alive(orphan):
            os.kill(orphan, signal.SIGKILL)
