"""The example `ratchet init --example harness` writes: its tasks, its agent, its files.

Every task's reference solution must pass its own verifier, and an untouched workspace
must fail every one (a reward of 0, never a missing reward): a suite the untouched
agent already passes leaves the meta-agent nothing to improve.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import pytest
from fake_llm import FakeLLM, tool_call
from processes import wait_until

from conftest import git, ratchet

with as_file(files("ratchet").joinpath("examples/harness")) as _example:
    EXAMPLE = Path(_example)
TASKS = sorted(p for p in (EXAMPLE / "tasks").iterdir() if p.is_dir())


def verify(task: Path, workspace: Path, tmp: Path) -> tuple[float, str]:
    """Run the task's verifier on `workspace` as a runner would: tests and logs
    in folders of their own, the workspace as the working directory."""
    tests, logs = tmp / "tests", tmp / "logs"
    shutil.copytree(task / "tests", tests)
    logs.mkdir()
    env = {**os.environ, "RATCHET_TESTS": str(tests), "RATCHET_LOGS": str(logs)}
    # /bin/sh, as the local runner runs it: the verifiers are POSIX shell
    done = subprocess.run(["/bin/sh", str(tests / "test.sh")], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    output = done.stdout + done.stderr
    reward_json, reward_txt = logs / "verifier" / "reward.json", logs / "verifier" / "reward.txt"
    if reward_json.is_file():  # Harbor's rule: reward.json wins
        return float(json.loads(reward_json.read_text())["reward"]), output
    assert reward_txt.is_file(), f"{task.name}: the verifier wrote no reward\n{output}"
    return float(reward_txt.read_text().strip()), output


def fresh_workspace(task: Path, tmp: Path) -> Path:
    """The task's files, as the local runner copies them (Harbor builds from the Dockerfile)."""
    workspace = tmp / "workspace"
    shutil.copytree(task / "environment", workspace, ignore=shutil.ignore_patterns("Dockerfile"))
    return workspace


def test_the_example_has_at_least_twelve_harbor_tasks() -> None:
    assert len(TASKS) >= 12
    for task in TASKS:
        for part in ("instruction.md", "task.toml", "environment", "tests/test.sh",
                     "solution/solve.sh"):  # fmt: skip
            assert (task / part).exists(), f"{task.name} has no {part}"
        config = tomllib.loads((task / "task.toml").read_text())
        assert config["agent"]["timeout_sec"] > 0
        assert config["verifier"]["timeout_sec"] > 0
        assert (task / "instruction.md").read_text().strip()


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_the_reference_solution_passes_its_verifier(task: Path, tmp_path: Path) -> None:
    workspace = fresh_workspace(task, tmp_path)
    solved = subprocess.run(["bash", str(task / "solution" / "solve.sh")], cwd=workspace,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert solved.returncode == 0, solved.stderr
    reward, output = verify(task, workspace, tmp_path)
    assert reward == 1.0, output


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_an_untouched_workspace_fails_the_verifier(task: Path, tmp_path: Path) -> None:
    reward, output = verify(task, fresh_workspace(task, tmp_path), tmp_path)
    assert reward == 0.0, output
    assert "FAILED" in output  # the verifier says why, for the meta-agent's traces


# The first thing a hasty agent would try, for tasks built to punish it.
NAIVE = {
    "count-errors": "grep -c ERROR app.log > error_count.txt",
    "csv-region-total": 'awk -F, \'$2 == "west" {s += $4} END {printf "%.2f\\n", s}\' '
    "sales.csv > west_total.txt",
    "ini-port": "sed -i 's/^port = .*/port = 8080/' settings.ini",
    "rename-extensions": 'cd photos && for f in *.jpeg; do mv "$f" "${f%.jpeg}.jpg"; done',
    "word-count-script": "echo 'wc -w \"$1\"' > count_words.sh && chmod +x count_words.sh",
    "latency-p95": "awk '{print $5+0}' access.log | sort -n | awk '{v[NR]=$1} "
    "END {print v[int(NR*0.95)]}' > p95.txt",
    "merge-config": 'python3 -c \'import json; a=json.load(open("base.json")); '
    'a.update(json.load(open("override.json"))); json.dump(a, open("merged.json", "w"))\'',
}


@pytest.mark.parametrize("name", sorted(NAIVE))
def test_a_naive_answer_fails_where_the_task_has_a_trap(name: str, tmp_path: Path) -> None:
    task = EXAMPLE / "tasks" / name
    workspace = fresh_workspace(task, tmp_path)
    done = subprocess.run(["bash", "-c", NAIVE[name]], cwd=workspace, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr  # the attempt ran, and was wrong
    reward, output = verify(task, workspace, tmp_path)
    assert reward == 0.0, output
    assert "FAILED" in output


def test_the_agent_solves_a_task_through_the_openai_sdk(tmp_path: Path) -> None:
    """The real agent.py, its real openai client, against a scripted loopback model:
    one shell command, then a final answer; the verifier passes and the trajectory
    records the call, its output and the tokens."""
    task = EXAMPLE / "tasks" / "hello-file"
    workspace = fresh_workspace(task, tmp_path)
    trajectory = tmp_path / "agent" / "trajectory.json"
    command = "echo 'Hello, ratchet!' > greeting.txt && ls"
    script = [tool_call("shell", command=command), {"content": "Done: greeting.txt written."}]
    with FakeLLM(script) as fake:
        env = {**os.environ, "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "test-key",
               "RATCHET_TASK_MODEL": "fake-model", "RATCHET_TRAJECTORY": str(trajectory)}  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(EXAMPLE / "agent.py"), str(task / "instruction.md"),
             str(workspace)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tokens: input=200 output=20 calls=2" in done.stdout
    # what the model was sent: the instruction, the shell tool, then the command's output
    assert len(fake.requests) == 2
    first, second = fake.requests
    assert first["model"] == "fake-model"
    assert first["messages"][1] == {
        "role": "user",
        "content": (task / "instruction.md").read_text(),
    }
    assert [t["function"]["name"] for t in first["tools"]] == ["shell"]
    tool_reply = second["messages"][-1]
    assert tool_reply["role"] == "tool" and tool_reply["tool_call_id"] == "call-shell"
    assert (
        tool_reply["content"].startswith("exit code 0\n")
        and "greeting.txt" in tool_reply["content"]
    )

    reward, output = verify(task, workspace, tmp_path)
    assert reward == 1.0, output

    document = json.loads(trajectory.read_text())
    assert document["schema_version"].startswith("ATIF-v1.")
    assert document["agent"]["model_name"] == "fake-model"
    sources = [s["source"] for s in document["steps"]]
    assert sources == ["system", "user", "agent", "agent"]
    assert [s["step_id"] for s in document["steps"]] == [1, 2, 3, 4]
    acting = document["steps"][2]
    assert acting["tool_calls"] == [{"tool_call_id": "call-shell", "function_name": "shell",
                                     "arguments": {"command": command}}]  # fmt: skip
    [result] = acting["observation"]["results"]
    assert result["source_call_id"] == "call-shell" and "greeting.txt" in result["content"]
    assert acting["metrics"]["prompt_tokens"] == 100
    assert document["steps"][3]["message"] == "Done: greeting.txt written."
    assert document["final_metrics"]["total_prompt_tokens"] == 200
    assert document["final_metrics"]["total_completion_tokens"] == 20


def import_agent() -> Any:
    """The example's agent.py as a module, as the local runner imports `agent.py:run`."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import agent
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("agent", None)
    return agent


def test_run_called_in_process_leaves_a_trace_of_a_failed_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agent.py:run` as the runner calls it (working directory = workspace): the
    model's wrong answer fails the verifier, and the trace shows what was run."""
    agent = import_agent()
    task = EXAMPLE / "tasks" / "count-errors"
    workspace = fresh_workspace(task, tmp_path)
    trajectory = tmp_path / "trajectory.json"
    script = [tool_call("shell", command=NAIVE["count-errors"]), {"content": "done"}]
    with FakeLLM(script) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("RATCHET_TRAJECTORY", str(trajectory))
        monkeypatch.delenv("RATCHET_TASK_MODEL", raising=False)
        monkeypatch.delenv("OPENAI_MODEL", raising=False)
        monkeypatch.chdir(workspace)
        outcome = agent.run((task / "instruction.md").read_text(), workspace)
    assert outcome == {
        "finished": True,
        "usage": {"input_tokens": 200, "output_tokens": 20, "calls": 2},
    }
    assert fake.requests[0]["model"] == agent.DEFAULT_MODEL
    reward, output = verify(task, workspace, tmp_path)
    assert reward == 0.0 and "FAILED" in output
    steps = json.loads(trajectory.read_text())["steps"]
    assert steps[2]["tool_calls"][0]["arguments"] == {"command": NAIVE["count-errors"]}


def test_the_agents_shell_tool_stops_a_runaway_command_and_caps_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = import_agent()
    monkeypatch.setattr(agent, "COMMAND_TIMEOUT", 1)
    # the sleeping grandchild holds the pipe open: only killing the whole group ends it
    stopped = agent.run_shell("sleep 30 & sleep 30; echo never", tmp_path)
    assert stopped.startswith("timed out after 1s")
    assert "never" not in stopped
    long = agent.run_shell("python3 -c 'print(\"x\" * 50000)'", tmp_path)
    assert long.startswith("exit code 0\n")
    assert "characters cut" in long and len(long) < agent.OUTPUT_LIMIT + 200
    assert agent.call_tool("shell", "not json", tmp_path).startswith("error:")
    assert agent.call_tool("browser", "{}", tmp_path).startswith("error: there is no tool")


def test_init_example_harness_writes_the_example_into_an_empty_folder(tmp_path: Path) -> None:
    project = tmp_path / "suite"
    project.mkdir()
    result = ratchet(project, "init", "--example", "harness")
    assert result.returncode == 0, result.stderr
    for name in ("agent.py", "program.md", "ratchet.toml", "tasks/hello-file/tests/test.sh"):
        assert (project / name).is_file(), name
    assert (project / "tasks/hello-file/tests/test.sh").stat().st_mode & 0o111
    assert sorted(p.name for p in (project / "tasks").iterdir()) == [t.name for t in TASKS]
    spec = tomllib.loads((project / "ratchet.toml").read_text())
    assert spec["suite"]["agent"] == "agent.py:run"
    assert spec["scope"]["editable"] == ["agent.py"]
    ignored = (project / ".gitignore").read_text().splitlines()
    assert ".ratchet/" in ignored and "tasks/" in ignored
    # a new folder becomes a repository with the example committed, ready for 'ratchet run';
    # the tasks stay out of git, so the sealed holdout never reaches a proposer's worktree
    assert git(project, "status", "--porcelain") == ""
    assert sorted(git(project, "ls-files").splitlines()) == [
        ".gitignore",
        "agent.py",
        "program.md",
        "ratchet.toml",
    ]


def test_init_example_refuses_a_folder_that_already_has_files(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text("mine\n")
    result = ratchet(tmp_path, "init", "--example", "harness")
    assert result.returncode == 2
    assert "not empty" in result.stderr
    assert (tmp_path / "agent.py").read_text() == "mine\n"
    unknown = ratchet(tmp_path, "init", "--example", "nope")
    assert unknown.returncode == 2 and "harness" in unknown.stderr


def test_init_example_in_an_empty_repository_leaves_the_commit_to_the_user(
    tmp_path: Path,
) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    result = ratchet(tmp_path, "init", "--example", "harness")
    assert result.returncode == 0, result.stderr
    assert "commit them" in result.stdout
    assert (tmp_path / "agent.py").is_file()
    assert git(tmp_path, "rev-list", "--all") == ""  # nothing committed on the user's behalf
    untracked = git(tmp_path, "status", "--porcelain").splitlines()
    assert "?? agent.py" in untracked and not any("tasks" in line for line in untracked)
    # below the top of a repository, ratchet.toml would be where ratchet never looks
    (tmp_path / "sub").mkdir()
    nested = ratchet(tmp_path / "sub", "init", "--example", "harness")
    assert nested.returncode == 2 and "inside the repository" in nested.stderr
    assert list((tmp_path / "sub").iterdir()) == []


def _running(pid: int) -> bool:
    """Whether `pid` is alive: a zombie (killed, not yet reaped) counts as ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_runner_stopping_the_agent_stops_its_running_command(tmp_path: Path) -> None:
    """A command runs in a process group of its own (so that its timeout kills it
    whole); when the runner's timeout sends SIGTERM to the agent's group, the agent
    kills the command's group too before it exits, and still writes its trace."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    instruction = tmp_path / "instruction.md"
    instruction.write_text("wait a long time\n")
    trajectory = tmp_path / "trajectory.json"
    script = [tool_call("shell", command="echo $$ > command.pid; sleep 300")]
    with FakeLLM(script) as fake:
        env = {**os.environ, "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "test-key",
               "RATCHET_TRAJECTORY": str(trajectory)}  # fmt: skip
        agent = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "agent.py"), str(instruction), str(workspace)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # a group of its own, as the runner starts it
        )  # fmt: skip
        try:
            pidfile = workspace / "command.pid"
            wait_until(lambda: pidfile.is_file() and pidfile.read_text().strip() != "",
                      "the command to start")  # fmt: skip
            command = int(pidfile.read_text())
            assert os.getpgid(command) == command != os.getpgid(agent.pid)
            os.killpg(agent.pid, signal.SIGTERM)  # what the process layer does at a timeout
            out, _ = agent.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGKILL)
    assert agent.returncode == 128 + signal.SIGTERM
    wait_until(lambda: not _running(command), "the command's group to be killed")
    # the model call it made is counted, and the trace shows the command it was running
    assert "tokens: input=100 output=10 calls=1" in out
    last = json.loads(trajectory.read_text())["steps"][-1]
    assert last["tool_calls"][0]["arguments"]["command"].endswith("sleep 300")
    assert last["observation"] == {"results": []}
