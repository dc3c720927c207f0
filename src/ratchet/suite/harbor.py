"""`runner = "harbor"`: the search split handed to the Harbor CLI, its job read back.

Harbor (PyPI `harbor`, Python >= 3.12) is installed by the user in its own
environment (`uv tool install --python 3.12 harbor`); ratchet only runs its CLI:

    harbor run -p TASKS -n CONCURRENCY -k ATTEMPTS -a module:Class -o JOBS_DIR
               --job-name NAME -i TASK ...

Older releases spell `-a module:Class` as `--agent-import-path`; `harbor run --help`
tells which. Only the tasks asked for run: by `-i/--include-task-name` (one exact,
glob-escaped name each) where the CLI has it, or else from a temporary folder of
links to those tasks alone, so a holdout task is never handed to Harbor with the
search split. Harbor runs with a scrubbed environment: the secrets `[suite] env`
names, no others.

Each trial folder of the job holds `result.json` (Harbor's `TrialResult`) and
`agent/trajectory.json` (ATIF); they become ratchet's `TrialResult`s, and each is
written to ratchet's own trial folder (`trial.json`, `trajectory.json`,
`verifier.txt`). No reward is an `error`, never a 0; an exception Harbor recorded is
an `error` with its message, or a `timeout` when it was one of Harbor's timeouts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ratchet.environment import child_environment
from ratchet.errors import UsageError
from ratchet.suite.runners import RunnerContext, TrialRunner, register_runner
from ratchet.suite.traces import SEARCH, write_trial_record
from ratchet.suite.trials import TRAJECTORY, VERIFIER_LOG, TrialResult, TrialStatus, TrialUsage

INSTALL = "install its CLI in an environment of its own: uv tool install --python 3.12 harbor"
HELP_TIMEOUT = 60.0  # seconds for `harbor run --help` (Harbor imports a lot)
KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL of Harbor's process group
LOG = "harbor.log"  # what Harbor printed, in the jobs folder
TAIL_LINES = 20  # of the verifier's output kept in a trial
FULL_CREDIT = 1.0


class HarborMissing(UsageError):
    """The `harbor` executable is not there: exit 2, saying how to install it."""


@dataclass(frozen=True)
class HarborCLI:
    """What the installed `harbor run` accepts, read from its --help."""

    executable: str
    agent_flag: str = "-a"  # "--agent-import-path" before Harbor's -a took import paths
    task_filter: bool = True  # -i/--include-task-name
    job_name: bool = True  # --job-name
    yes: bool = True  # -y/--yes: no confirmation prompt


def detect_harbor(executable: str = "harbor") -> HarborCLI:
    """The installed Harbor CLI, or HarborMissing saying how to install it."""
    path = shutil.which(executable)
    if path is None:
        raise HarborMissing(f"the harbor runner needs Harbor's CLI ({executable!r} is not on "
                            f"PATH); {INSTALL}")  # fmt: skip
    try:
        done = subprocess.run([path, "run", "--help"], capture_output=True, text=True,
                              timeout=HELP_TIMEOUT, env=child_environment())  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HarborMissing(f"{path} run --help failed ({error}); {INSTALL}") from None
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    if done.returncode != 0 or "--jobs-dir" not in text:
        tail = (text.strip().splitlines() or ["no output"])[-1][:200]
        raise HarborMissing(f"{path} run --help did not answer as Harbor does ({tail}); {INSTALL}")
    # 0.26 hides --agent-import-path (deprecated) and takes module:Class through -a
    agent_flag = "--agent-import-path" if "--agent-import-path" in text else "-a"
    return HarborCLI(path, agent_flag, "--include-task-name" in text, "--job-name" in text,
                     "--yes" in text)  # fmt: skip


def glob_escape(name: str) -> str:
    """`name` as an fnmatch pattern matching only itself (Harbor's -i takes globs)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def harbor_command(
    cli: HarborCLI,
    tasks: Path,
    agent: str,
    jobs_dir: Path,
    job_name: str,
    concurrency: int,
    attempts: int,
    include: Sequence[str] = (),
) -> list[str]:
    command = [cli.executable, "run", "-p", str(tasks), "-n", str(concurrency),
               "-k", str(attempts), cli.agent_flag, agent, "-o", str(jobs_dir)]  # fmt: skip
    if cli.job_name:
        command += ["--job-name", job_name]
    for name in include:
        command += ["-i", glob_escape(name)]
    if cli.yes:
        command.append("--yes")
    return command


def default_trial_folder(root: Path) -> Callable[[str, int], Path]:
    return lambda task, attempt: root / task / f"attempt-{attempt}"


@dataclass(frozen=True)
class HarborJob:
    trials: list[TrialResult]  # one per task and attempt asked for, in that order
    returncode: int | None  # None: killed at the timeout
    log: Path  # what Harbor printed


def run_harbor(
    tasks_dir: Path,
    task_names: Sequence[str],
    agent: str,
    jobs_dir: Path,
    trial_folder: Callable[[str, int], Path],
    *,
    concurrency: int = 4,
    attempts: int = 1,
    timeout_s: float = 3600.0,
    env: Sequence[str] = (),
    metric: str = "reward",
    executable: str = "harbor",
    cli: HarborCLI | None = None,
    extra_env: Mapping[str, str] | None = None,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> HarborJob:
    """Run `task_names` (the search split) of `tasks_dir` through Harbor, `attempts`
    trials each, and return every trial: those Harbor never finished are `timeout`
    (past `timeout_s`) or `error`, so the count is always tasks x attempts."""
    if not task_names:  # Harbor would run every task of the folder, the holdout's too
        raise ValueError("run_harbor needs the search split's task names; none were given")
    cli = cli or detect_harbor(executable)
    tasks_dir, jobs_dir = tasks_dir.resolve(), jobs_dir.resolve()  # Harbor's cwd is ours
    jobs_dir.mkdir(parents=True, exist_ok=True)
    job_name = f"ratchet-{uuid.uuid4().hex[:12]}"
    log = jobs_dir / LOG
    with contextlib.ExitStack() as stack:
        tasks, include = tasks_dir, list(task_names)
        if not cli.task_filter:  # only the search split is in the folder Harbor sees
            staged = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ratchet-")))
            for name in task_names:
                (staged / name).symlink_to((tasks_dir / name).resolve(), target_is_directory=True)
            tasks, include = staged, []
        command = harbor_command(cli, tasks, agent, jobs_dir, job_name, concurrency, attempts,
                                 include)  # fmt: skip
        returncode = _run(command, log, timeout_s, child_environment(env, extra_env), started)
    job_dir = jobs_dir / job_name if cli.job_name else jobs_dir
    found = read_job(job_dir, metric)
    if returncode is None:
        missing = (TrialStatus.TIMEOUT, f"Harbor ran past the suite's {timeout_s:g}s")
    else:
        last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
        missing = (TrialStatus.ERROR, f"Harbor left no result for this trial (harbor "
                                      f"exited {returncode}: {last[:200]})")  # fmt: skip
    trials = []
    for name in task_names:
        runs = found.get(name, [])
        for attempt in range(attempts):
            folder = trial_folder(name, attempt)
            folder.mkdir(parents=True, exist_ok=True)
            if attempt < len(runs):
                trial = _keep(runs[attempt], name, attempt, folder)
            else:
                trial = TrialResult(name, attempt, missing[0], None, {}, 0.0, TrialUsage(),
                                    error=missing[1])  # fmt: skip
            write_trial_record(folder, trial, SEARCH)
            trials.append(trial)
    return HarborJob(trials, returncode, log)


def _run(
    command: list[str],
    log: Path,
    timeout_s: float,
    env: dict[str, str],
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> int | None:
    """Harbor's exit code, or None when it was killed (its whole group) at the timeout."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
        if started is not None:  # so that a stop of the run can end the whole group
            started(process)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            return None


@dataclass(frozen=True)
class _Found:
    trial: TrialResult  # attempt not yet known
    directory: Path  # Harbor's trial folder
    started: str


def read_job(job_dir: Path, metric: str = "reward") -> dict[str, list[_Found]]:
    """Every trial of a Harbor job folder, by task name, in the order they started."""
    found: dict[str, list[_Found]] = {}
    for path in sorted(job_dir.glob("*/result.json")) + sorted(job_dir.glob("*/*/result.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a file being written, or not Harbor's
        if not isinstance(data, dict) or "task_name" not in data or "trial_name" not in data:
            continue  # the job's own result.json
        trial = trial_from_harbor(data, path.parent, metric)
        found.setdefault(trial.task, []).append(
            _Found(trial, path.parent, str(data.get("started_at") or ""))
        )
    for runs in found.values():
        runs.sort(key=lambda f: (f.started, f.directory.name))
    return found


def _task_name(data: dict[str, Any]) -> str:
    """The task's folder name: what ratchet's split is made of (a local task's id is
    its path; `task_name` may be the name its task.toml gives)."""
    task_id = data.get("task_id")
    if isinstance(task_id, dict) and isinstance(task_id.get("path"), str):
        return Path(task_id["path"]).name
    return str(data["task_name"]).rsplit("/", 1)[-1]


def _seconds(start: object, end: object) -> float:
    try:
        began = datetime.fromisoformat(str(start))
        ended = datetime.fromisoformat(str(end))
    except ValueError:
        return 0.0
    return max(0.0, (ended - began).total_seconds())


def trial_from_harbor(data: dict[str, Any], directory: Path, metric: str = "reward") -> TrialResult:
    """One Harbor `result.json` as a TrialResult (attempt 0; the caller numbers them)."""
    # a multi-step trial records one agent_result per step instead of one for the trial
    steps = [s.get("agent_result") for s in data.get("step_results") or [] if isinstance(s, dict)]
    top = data.get("agent_result")
    agents = [top] if isinstance(top, dict) else [a for a in steps if isinstance(a, dict)]
    usage = TrialUsage(
        input_tokens=sum(int(a.get("n_input_tokens") or 0) for a in agents),
        output_tokens=sum(int(a.get("n_output_tokens") or 0) for a in agents),
        cost_usd=sum(float(a.get("cost_usd") or 0.0) for a in agents),
        calls=_agent_steps(directory / "agent" / TRAJECTORY),
    )
    verifier = data.get("verifier_result") or {}
    raw = verifier.get("rewards") if isinstance(verifier, dict) else None
    rewards = {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    reward = rewards.get(metric, next(iter(rewards.values())) if len(rewards) == 1 else None)
    exception = data.get("exception_info")
    status, error = TrialStatus.ERROR, ""
    if isinstance(exception, dict):
        kind = str(exception.get("exception_type") or "Exception")
        message = str(exception.get("exception_message") or "").strip().splitlines()
        error = f"{kind}: {message[0] if message else ''}"[:300]
        status = TrialStatus.TIMEOUT if "Timeout" in kind else TrialStatus.ERROR
        reward = None
    elif reward is None:
        error = (f"the verifier wrote no {metric!r} reward" if rewards else
                 "the verifier wrote no reward")  # fmt: skip
    else:
        status = TrialStatus.PASSED if reward >= FULL_CREDIT else TrialStatus.FAILED
    tail = ""
    stdout = directory / "verifier" / "test-stdout.txt"
    if stdout.is_file():
        tail = "\n".join(stdout.read_text(errors="replace").splitlines()[-TAIL_LINES:])
    return TrialResult(
        task=_task_name(data),
        attempt=0,
        status=status,
        reward=reward,
        rewards=rewards,
        duration_s=_seconds(data.get("started_at"), data.get("finished_at")),
        usage=usage,
        error=error,
        verifier_tail=tail,
    )


def _agent_steps(trajectory: Path) -> int:
    """Model calls, as the ATIF trajectory counts them (agent steps), or 0."""
    try:
        steps = json.loads(trajectory.read_text()).get("steps") or []
    except (OSError, ValueError, AttributeError):
        return 0
    return sum(int(s.get("llm_call_count") or 1) for s in steps
               if isinstance(s, dict) and s.get("source") == "agent")  # fmt: skip


def _keep(found: _Found, task: str, attempt: int, folder: Path) -> TrialResult:
    """The trial, numbered, with Harbor's trajectory and verifier output in its folder."""
    trace = None
    source = found.directory / "agent" / TRAJECTORY
    if source.is_file() and not source.is_symlink():
        trace = folder / TRAJECTORY
        shutil.copyfile(source, trace)
    stdout = found.directory / "verifier" / "test-stdout.txt"
    if stdout.is_file() and not stdout.is_symlink():
        shutil.copyfile(stdout, folder / VERIFIER_LOG)
    trial = found.trial
    return TrialResult(task, attempt, trial.status, trial.reward, trial.rewards,
                       trial.duration_s, trial.usage, trial.error, trial.verifier_tail,
                       trace)  # fmt: skip


def _harbor_runner(context: RunnerContext) -> TrialRunner:
    """`runner = "harbor"` (make_runner imports this module for it)."""
    from ratchet.suite.harbor_runner import HarborRunner

    suite = context.spec.suite
    assert suite is not None
    tasks = Path(suite.tasks)
    tasks_dir = tasks if tasks.is_absolute() else context.project / tasks
    return HarborRunner(suite, tasks_dir, context.scratch)


register_runner("harbor", _harbor_runner)

__all__ = [
    "HarborCLI",
    "HarborJob",
    "HarborMissing",
    "default_trial_folder",
    "detect_harbor",
    "harbor_command",
    "read_job",
    "run_harbor",
]
