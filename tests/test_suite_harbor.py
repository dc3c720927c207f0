"""The `harbor` runner against a stub `harbor` executable that writes Harbor's
documented job layout: JOBS_DIR/JOB_NAME/TRIAL/result.json (Harbor's TrialResult),
TRIAL/agent/trajectory.json (ATIF) and TRIAL/verifier/test-stdout.txt."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ratchet.suite.harbor import (
    HarborCLI,
    HarborMissing,
    default_trial_folder,
    detect_harbor,
    glob_escape,
    harbor_command,
    run_harbor,
)
from ratchet.suite.traces import SEARCH
from ratchet.suite.trials import TRAJECTORY, TRIAL_RECORD, VERIFIER_LOG, TrialStatus

HELP_NEW = """Usage: harbor run [OPTIONS]
  -c, --config  -o, --jobs-dir  --job-name  -k, --n-attempts  -n, --n-concurrent
  -a, --agent  -p, --path  -i, --include-task-name  -x, --exclude-task-name  -y, --yes
"""
HELP_OLD = """Usage: harbor run [OPTIONS]
  -o, --jobs-dir  -k, --n-attempts  -n, --n-concurrent  -a, --agent
  --agent-import-path  -p, --path
"""

# The stub: answers `run --help` from $STUB_HELP, and `run ...` by writing one trial
# folder per task and attempt; what happens in a trial depends on the task's name.
STUB = r"""
import fnmatch, json, os, sys, time, uuid
from pathlib import Path
args = sys.argv[1:]
if args[:2] == ["run", "--help"]:
    print(os.environ["STUB_HELP"]); sys.exit(0)
def value(*flags):
    for flag in flags:
        if flag in args:
            return args[args.index(flag) + 1]
tasks, jobs = Path(value("-p")), Path(value("-o"))
attempts = int(value("-k") or 1)
job = jobs / (value("--job-name") or "2026-12-01__17-00-00")
job.mkdir(parents=True, exist_ok=True)
patterns = [args[i + 1] for i, a in enumerate(args) if a == "-i"]
(jobs / "stub-call.json").write_text(json.dumps({"argv": args, "env": dict(os.environ),
    "tasks": sorted(p.name for p in tasks.iterdir())}))
(job / "result.json").write_text(json.dumps({"id": "job", "n_total_trials": 0}))
names = sorted(p.name for p in tasks.iterdir() if (p / "task.toml").exists())
names = [n for n in names if not patterns or any(fnmatch.fnmatch(n, p) for p in patterns)]
for name in names:
    for attempt in range(attempts):
        if name.startswith("hang"):
            time.sleep(600)
        trial = job / f"{name}__{uuid.uuid4().hex[:7]}"
        (trial / "agent").mkdir(parents=True)
        (trial / "verifier").mkdir()
        reward = {"pass": 1.0, "fail": 0.0, "half": 0.5}.get(name.split("-")[0])
        result = {
            "task_name": name, "trial_name": trial.name, "trial_uri": trial.as_uri(),
            "task_id": {"path": str(tasks / name)}, "task_checksum": "x",
            "config": {}, "agent_info": {"name": "agent", "version": "1"},
            "agent_result": {"n_input_tokens": 1200, "n_output_tokens": 80, "cost_usd": 0.004},
            "verifier_result": {"rewards": {"reward": reward}} if reward is not None else None,
            "exception_info": None,
            "started_at": f"2026-12-01T17:00:0{attempt}+00:00",
            "finished_at": f"2026-12-01T17:00:1{attempt}+00:00",
        }
        if name.startswith("crash"):
            result["exception_info"] = {"exception_type": "RuntimeError",
                "exception_message": "docker build failed: no space left\nmore",
                "exception_traceback": "...", "occurred_at": "2026-12-01T17:00:05+00:00"}
        if name.startswith("slow"):
            result["exception_info"] = {"exception_type": "AgentTimeoutError",
                "exception_message": "Agent execution timed out after 60.0 seconds",
                "exception_traceback": "...", "occurred_at": "2026-12-01T17:01:00+00:00"}
        (trial / "result.json").write_text(json.dumps(result))
        (trial / "agent" / "trajectory.json").write_text(json.dumps({
            "schema_version": "ATIF-v1.2", "session_id": "s",
            "agent": {"name": "agent", "version": "1"},
            "steps": [{"step_id": 1, "source": "user", "message": "do it"},
                      {"step_id": 2, "source": "agent", "message": "ok",
                       "tool_calls": [{"tool_call_id": "c", "function_name": "shell",
                                       "arguments": {"cmd": "ls"}}]}]}))
        (trial / "verifier" / "test-stdout.txt").write_text(f"checking {name}\nverdict {reward}\n")
"""


def stub_harbor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, help_text: str = HELP_NEW) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "harbor"
    stub.write_text(f"#!{sys.executable}\n{STUB}")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STUB_HELP", help_text)
    return stub


def make_tasks(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name / "tests").mkdir(parents=True)
        (root / name / "task.toml").write_text("[agent]\ntimeout_sec = 60\n")
        (root / name / "instruction.md").write_text(f"solve {name}\n")
    return root


def test_a_job_becomes_one_trial_per_task_and_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_harbor(tmp_path, monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-allowed-123456")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-not-allowed-123456")
    names = ["pass-a", "fail-b", "half-c", "crash-d", "noreward-e", "slow-f"]
    tasks = make_tasks(tmp_path / "tasks", [*names, "pass-holdout"])
    jobs, trials_root = tmp_path / "jobs", tmp_path / "trials"
    job = run_harbor(tasks, names, "agent:Harness", jobs, default_trial_folder(trials_root),
                     concurrency=3, attempts=2, timeout_s=120, env=["OPENAI_API_KEY"])  # fmt: skip
    assert job.returncode == 0
    by = {(t.task, t.attempt): t for t in job.trials}
    assert len(job.trials) == 12 and set(by) == {(n, a) for n in names for a in (0, 1)}
    assert by["pass-a", 0].status is TrialStatus.PASSED and by["pass-a", 0].reward == 1.0
    assert by["fail-b", 1].status is TrialStatus.FAILED and by["fail-b", 1].reward == 0.0
    assert by["half-c", 0].status is TrialStatus.FAILED and by["half-c", 0].reward == 0.5
    crash = by["crash-d", 0]
    assert crash.status is TrialStatus.ERROR and crash.reward is None
    assert crash.error == "RuntimeError: docker build failed: no space left"
    missing = by["noreward-e", 0]  # no reward is an error, never a 0
    assert missing.status is TrialStatus.ERROR and missing.reward is None
    assert "no reward" in missing.error
    slow = by["slow-f", 1]
    assert slow.status is TrialStatus.TIMEOUT and "timed out after 60.0 seconds" in slow.error
    first = by["pass-a", 0]
    assert (first.usage.input_tokens, first.usage.output_tokens) == (1200, 80)
    assert first.usage.cost_usd == pytest.approx(0.004) and first.usage.calls == 1
    assert first.duration_s == pytest.approx(10.0)
    assert first.verifier_tail.endswith("verdict 1.0")
    # ratchet's own trial folder: the record (marked search), the trajectory, the verifier
    folder = trials_root / "pass-a" / "attempt-0"
    assert first.trace_path == folder / TRAJECTORY
    assert json.loads((folder / TRAJECTORY).read_text())["steps"][1]["source"] == "agent"
    assert (folder / VERIFIER_LOG).read_text().startswith("checking pass-a")
    record = json.loads((folder / TRIAL_RECORD).read_text())
    assert record["split"] == SEARCH and record["status"] == "passed"
    call = json.loads((jobs / "stub-call.json").read_text())
    argv = call["argv"]
    assert argv[:10] == ["run", "-p", str(tasks), "-n", "3", "-k", "2", "-a", "agent:Harness",
                         "-o"]  # fmt: skip
    assert "pass-holdout" not in argv and argv.count("-i") == len(names)
    assert "--job-name" in argv and "--yes" in argv
    # only the secrets [suite] env names reach Harbor
    assert call["env"]["OPENAI_API_KEY"] == "sk-allowed-123456"
    assert "GITHUB_TOKEN" not in call["env"]
    assert not (trials_root / "pass-holdout").exists()


def test_an_older_harbor_gets_its_flag_and_a_folder_of_the_search_tasks_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_harbor(tmp_path, monkeypatch, HELP_OLD)
    cli = detect_harbor()
    assert (cli.agent_flag, cli.task_filter, cli.job_name) == ("--agent-import-path", False, False)
    tasks = make_tasks(tmp_path / "tasks", ["pass-a", "fail-b", "pass-holdout"])
    jobs = tmp_path / "jobs"
    job = run_harbor(tasks, ["pass-a", "fail-b"], "agent:Harness", jobs,
                     default_trial_folder(tmp_path / "trials"), timeout_s=120)  # fmt: skip
    assert sorted((t.task, t.status.value) for t in job.trials) == [
        ("fail-b", "failed"), ("pass-a", "passed")]  # fmt: skip
    call = json.loads((jobs / "stub-call.json").read_text())
    assert call["tasks"] == ["fail-b", "pass-a"]  # the holdout task was not in Harbor's folder
    assert "--agent-import-path" in call["argv"] and "-i" not in call["argv"]


def test_a_harbor_past_its_timeout_is_killed_and_its_unfinished_trials_are_timeouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_harbor(tmp_path, monkeypatch)
    tasks = make_tasks(tmp_path / "tasks", ["fail-a", "hang-b"])
    job = run_harbor(tasks, ["fail-a", "hang-b"], "agent:Harness", tmp_path / "jobs",
                     default_trial_folder(tmp_path / "trials"), timeout_s=8)  # fmt: skip
    assert job.returncode is None
    by = {t.task: t for t in job.trials}
    assert by["fail-a"].status is TrialStatus.FAILED  # finished before the hang
    assert by["hang-b"].status is TrialStatus.TIMEOUT
    assert "past the suite's 8s" in by["hang-b"].error


def test_a_harbor_that_fails_leaves_error_trials_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = stub_harbor(tmp_path, monkeypatch)
    stub.write_text(f"#!{sys.executable}\nimport sys\nprint('cannot connect to docker')\n"
                    "sys.exit(3)\n")  # fmt: skip
    cli = HarborCLI(str(stub))
    tasks = make_tasks(tmp_path / "tasks", ["pass-a"])
    job = run_harbor(tasks, ["pass-a"], "agent:Harness", tmp_path / "jobs",
                     default_trial_folder(tmp_path / "trials"), cli=cli)  # fmt: skip
    assert job.returncode == 3
    [trial] = job.trials
    assert trial.status is TrialStatus.ERROR
    assert "harbor exited 3: cannot connect to docker" in trial.error


def test_a_missing_harbor_is_one_line_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarborMissing) as missing:
        detect_harbor()
    message = str(missing.value)
    assert "\n" not in message
    assert "uv tool install --python 3.12 harbor" in message


def test_task_names_are_passed_as_globs_that_match_only_themselves(tmp_path: Path) -> None:
    import fnmatch

    assert fnmatch.fnmatch("a*b", glob_escape("a*b"))
    assert not fnmatch.fnmatch("axxb", glob_escape("a*b"))
    assert not fnmatch.fnmatch("a1", glob_escape("a[12]"))
    command = harbor_command(HarborCLI("harbor"), tmp_path, "m:C", tmp_path / "j", "job", 4, 1,
                             ["t?"])  # fmt: skip
    assert command[command.index("-i") + 1] == "t[?]"


def test_a_multi_step_trial_sums_its_steps_usage(tmp_path: Path) -> None:
    from ratchet.suite.harbor import trial_from_harbor

    step = {"n_input_tokens": 100, "n_output_tokens": 7, "cost_usd": 0.5}
    data = {"task_name": "org/two-steps", "trial_name": "two-steps__1", "agent_result": None,
            "step_results": [{"step_name": "a", "agent_result": step},
                             {"step_name": "b", "agent_result": step}],
            "verifier_result": {"rewards": {"reward": 1}}}  # fmt: skip
    trial = trial_from_harbor(data, tmp_path)
    assert trial.task == "two-steps"  # the name without its org
    assert (trial.usage.input_tokens, trial.usage.output_tokens) == (200, 14)
    assert trial.usage.cost_usd == pytest.approx(1.0)
    assert trial.status is TrialStatus.PASSED and trial.reward == 1.0


def test_rewards_without_the_metric_are_an_error_unless_there_is_only_one(tmp_path: Path) -> None:
    from ratchet.suite.harbor import trial_from_harbor

    base = {"task_name": "t", "trial_name": "t__1"}
    only = trial_from_harbor({**base, "verifier_result": {"rewards": {"score": 0.25}}}, tmp_path)
    assert only.status is TrialStatus.FAILED and only.reward == 0.25
    two = {"rewards": {"score": 1.0, "style": 0.0}}
    trial = trial_from_harbor({**base, "verifier_result": two}, tmp_path)
    assert trial.status is TrialStatus.ERROR and trial.reward is None
    assert "no 'reward' reward" in trial.error


def test_no_task_names_is_refused_before_harbor_runs(tmp_path: Path) -> None:
    """Harbor given no -i runs every task of the folder, the holdout's too."""
    with pytest.raises(ValueError, match="search split's task names"):
        run_harbor(tmp_path, [], "agent:Harness", tmp_path / "jobs",
                   default_trial_folder(tmp_path / "trials"), cli=HarborCLI("/bin/false"))  # fmt: skip
    assert not (tmp_path / "jobs").exists()
