"""The `local` runner: trials on this machine, in ratchet's own sandbox layers.

One trial: a fresh workspace holding the task's `environment/` files; the agent's entry
point (`[suite] agent = "agent.py:run"`) is imported from the candidate's tree and called
as `run(instruction, workspace)` by a small `python -c` program, with the workspace as its
working folder, under the task's `[agent] timeout_sec`. Only after it has finished do
the task's tests appear (a fresh copy) and `tests/test.sh` runs, under
`[verifier] timeout_sec`, and its reward file is read.

Where the verifier finds Harbor's paths:
- bwrap: at Harbor's absolute paths, `/tests` (read-only) and `/logs/verifier/`;
- process: no paths can be added to the host, so `$RATCHET_TESTS` and `$RATCHET_LOGS`
  name the copies (set under bwrap too, as `/tests` and `/logs`). A `test.sh` that names
  `/tests` or `/logs` literally and neither variable cannot run there: its trial is an
  `error` that says so.

The agent's model calls go through a `Meter` (metering.py's proxy, when the agent may
have an OpenAI key), which replaces its base URL and key for the trial.

Docker is not a layer for trials here: run a suite in containers with `runner = "harbor"`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ratchet.environment import Redactor, child_environment
from ratchet.private import write_private
from ratchet.sandbox import ProcessResult, Sandbox, kill_leftover
from ratchet.sandbox.bwrap import BwrapSandbox
from ratchet.spec import SpecError
from ratchet.specmodel import SuiteSpec
from ratchet.suite.runners import RunnerContext, TrialRequest, register_runner
from ratchet.suite.tasks import NOT_COPIED, TEST_SCRIPT, Task
from ratchet.suite.trials import (
    AGENT_LOG,
    TRAJECTORY,
    TRIAL_RECORD,
    VERIFIER_LOG,
    TrialResult,
    TrialStatus,
    TrialUsage,
    trial_to_dict,
)

GRACE = 2.0  # seconds between SIGTERM and SIGKILL at a timeout
TAIL_LINES = 20  # of the verifier's output, kept in the trial record
AGENT_DIR = ".ratchet-agent"  # in the workspace while the agent runs; moved out before tests
AGENT_RESULT = "result.json"  # what `run` returned, when it returned a JSON object
HARBOR_PATH = re.compile(r"(?<![\w.$}-])/(?:logs|tests)\b")
# imports the agent's file from the candidate's tree, calls its function, and keeps a
# JSON object it returns (usage, say) beside the trajectory the agent may write
AGENT_MAIN = """
import importlib.util, json, os, sys
tree, file, function, out, workspace = sys.argv[1:6]
path = os.path.join(tree, file)
sys.path[:0] = [os.path.dirname(path), tree]
spec = importlib.util.spec_from_file_location("ratchet_task_agent", path)
module = importlib.util.module_from_spec(spec)
sys.modules["ratchet_task_agent"] = module
spec.loader.exec_module(module)
with open(os.path.join(out, "instruction.md"), encoding="utf-8") as handle:
    instruction = handle.read()
result = getattr(module, function)(instruction, workspace)
if isinstance(result, dict):
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, default=str)
"""


@dataclass
class AgentSession:
    """What a meter gives one trial's agent: environment additions (the metering proxy's
    address as `OPENAI_BASE_URL`, say), and after the agent, what it metered (None: the
    agent's own report is all there is)."""

    env: dict[str, str] = field(default_factory=dict)
    usage: Callable[[], TrialUsage | None] = lambda: None
    # why the agent's own report of its usage disagrees with the metered one ("": it agrees)
    check: Callable[[TrialUsage], str] = lambda reported: ""
    # the agent's command line behind what the meter needs (the proxy's bridge, say)
    wrap: Callable[[str], str] = lambda command: command
    binds: list[tuple[bool, Path, Path]] = field(default_factory=list)  # into its bwrap


# THE SEAM for the metering proxy: called once per trial with the trial's folder (where a
# proxy writes the calls it saw into the trace) and the agent's environment.
Meter = Callable[[Path, Mapping[str, str]], AbstractContextManager[AgentSession]]


@contextlib.contextmanager
def no_meter(folder: Path, env: Mapping[str, str]) -> Iterator[AgentSession]:
    yield AgentSession()


def model_env(model: str | None) -> dict[str, str]:
    """The pairing's task model for the agent: `RATCHET_TASK_MODEL` (what the example agent
    reads), and `RATCHET_MODEL`, its older name."""
    return {"RATCHET_TASK_MODEL": model, "RATCHET_MODEL": model} if model else {}


def reported_usage(result: Mapping[str, object]) -> TrialUsage:
    """The usage the agent reported about itself in what `run` returned:
    `{"usage": {"input_tokens", "output_tokens", "cost_usd", "calls"}}` (OpenAI's
    `prompt_tokens` and `completion_tokens` are read too). The trial's usage only when no
    meter saw the calls; with the metering proxy it is checked against the metered one."""
    usage = result.get("usage")
    if not isinstance(usage, dict):
        return TrialUsage()

    def number(*names: str) -> float:
        for name in names:
            value = usage.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value) if math.isfinite(value) else 0.0
        return 0.0

    return TrialUsage(
        input_tokens=int(number("input_tokens", "prompt_tokens")),
        output_tokens=int(number("output_tokens", "completion_tokens")),
        cost_usd=number("cost_usd", "cost"),
        calls=int(number("calls")),
    )


def read_reward(verifier_logs: Path) -> tuple[float | None, dict[str, float], str]:
    """The reward, every number reported, and why there is no reward. `reward.json` (a
    name to number object, `reward` its key or its only one) wins over `reward.txt`."""
    json_file, text_file = verifier_logs / "reward.json", verifier_logs / "reward.txt"
    rewards: dict[str, float] = {}
    for path in (json_file, text_file):
        if path.is_symlink():
            return None, {}, f"the verifier's {path.name} is a link; not followed"
    if json_file.is_file():
        try:
            data = json.loads(json_file.read_text(encoding="utf-8")[:1_000_000])
        except (OSError, ValueError) as error:
            return None, {}, f"reward.json is not JSON ({error})"
        if not isinstance(data, dict):
            return None, {}, "reward.json does not hold an object of names to numbers"
        rewards = {
            str(k): float(v)
            for k, v in data.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if "reward" in rewards:
            reward = rewards["reward"]
        elif len(rewards) == 1:
            reward = next(iter(rewards.values()))
        else:
            return None, rewards, "reward.json names no 'reward' among several numbers"
    elif text_file.is_file():
        text = text_file.read_text(encoding="utf-8", errors="replace").strip()
        try:
            reward = float(text.splitlines()[0]) if text else math.nan
        except ValueError:
            return None, {}, f"reward.txt holds {text[:40]!r}, not a number"
        rewards = {"reward": reward}
    else:
        return None, {}, "the verifier wrote no reward (logs/verifier/reward.txt or reward.json)"
    if not math.isfinite(reward):
        return None, rewards, f"the reward is {reward}, not a finite number"
    return reward, rewards, ""


class _TrialBwrap(BwrapSandbox):
    """The run's bwrap layer with a trial's paths added: the candidate's tree (read-only)
    for the agent; `/tests` (read-only) and `/logs` for the verifier. They are bound
    before the root is made read-only, where bwrap can still create their mount points."""

    def __init__(self, base: BwrapSandbox, binds: Sequence[tuple[bool, Path, Path]]) -> None:
        self.__dict__.update(base.__dict__)
        self.binds = list(binds)

    def options(self, cwd: Path, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
        head, protected = super().options(cwd, env)
        at = head.index("--remount-ro")
        extra: list[str] = []
        for read_only, source, target in self.binds:
            extra += ["--ro-bind" if read_only else "--bind", str(source), str(target)]
        return head[:at] + extra + head[at:], protected


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def _copy_environment(task: Task, workspace: Path) -> None:
    workspace.mkdir(parents=True)
    source = task.environment
    if not source.is_dir():
        return
    for entry in source.iterdir():
        if entry.name in NOT_COPIED or entry.is_symlink():
            continue
        target = workspace / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target)


class LocalRunner:
    name = "local"

    def __init__(
        self,
        suite: SuiteSpec,
        sandbox: Sandbox,
        scratch: Path,
        meter: Meter = no_meter,
        python: str = sys.executable,
    ) -> None:
        if sandbox.name not in ("process", "bwrap"):
            raise SpecError(
                f"[suite] runner 'local' runs trials on the process or bwrap layer, not "
                f"{sandbox.name!r}; for containers use runner = 'harbor'"
            )
        self.suite, self.sandbox, self.scratch = suite, sandbox, scratch
        self.meter, self.python = meter, python
        self.redact = Redactor()
        # only the secrets [suite] env names reach the agent; none reach the verifier
        self.agent_env = child_environment(allow=suite.env)
        self.verifier_env = child_environment()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.pidfiles: set[Path] = set()

    def spend_left(self, left_usd: float | None) -> None:
        """What is left of `max_cost_usd` before the next batch: the metered trials' cap."""
        start = getattr(self.meter, "start_batch", None)
        if start is not None:
            start(left_usd)

    def run_trials(self, requests: Sequence[TrialRequest], tree: Path) -> list[TrialResult]:
        if not requests:
            return []
        self.stopped.clear()
        workers = min(self.suite.concurrency, len(requests))
        with ThreadPoolExecutor(workers, thread_name_prefix="trial") as pool:
            return list(pool.map(lambda request: self._trial(request, tree), requests))

    def interrupt(self) -> None:
        self.stopped.set()
        with self.lock:
            pidfiles = list(self.pidfiles)
        for pidfile in pidfiles:
            kill_leftover(pidfile)

    # one trial ------------------------------------------------------------------------
    def _trial(self, request: TrialRequest, tree: Path) -> TrialResult:
        request.folder.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="trial-", dir=self.scratch))
        try:
            trial = self._run(request, tree, root)
        except OSError as error:  # the machine's fault, never the agent's score
            trial = self._result(
                request, TrialStatus.ERROR, error=f"the trial could not be set up: {error}"
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        write_private(request.folder / TRIAL_RECORD, json.dumps(trial_to_dict(trial), indent=1))
        return trial

    def _result(
        self,
        request: TrialRequest,
        status: TrialStatus,
        reward: float | None = None,
        rewards: dict[str, float] | None = None,
        duration: float = 0.0,
        usage: TrialUsage | None = None,
        error: str = "",
        verifier_tail: str = "",
    ) -> TrialResult:
        trace = request.folder / TRAJECTORY
        return TrialResult(request.task.name, request.attempt, status, reward, rewards or {},
                           duration, usage or TrialUsage(), self.redact(error),
                           self.redact(verifier_tail), trace if trace.is_file() else None)  # fmt: skip

    def _execute(
        self,
        command: str,
        cwd: Path,
        env: Mapping[str, str],
        budget: float,
        pidfile: Path,
        binds: Sequence[tuple[bool, Path, Path]],
    ) -> ProcessResult:
        sandbox: Sandbox = self.sandbox
        if isinstance(self.sandbox, BwrapSandbox):
            sandbox = _TrialBwrap(self.sandbox, binds)
        with self.lock:
            self.pidfiles.add(pidfile)
        try:
            return sandbox.run(command, cwd, env, budget, GRACE, pidfile)
        finally:
            with self.lock:
                self.pidfiles.discard(pidfile)

    def _run(self, request: TrialRequest, tree: Path, root: Path) -> TrialResult:
        task = request.task
        if self.stopped.is_set():
            return self._result(request, TrialStatus.ERROR, error="interrupted: the run stopped")
        bwrap = isinstance(self.sandbox, BwrapSandbox)
        script = (task.tests / TEST_SCRIPT).read_text(encoding="utf-8", errors="replace")
        if not bwrap and HARBOR_PATH.search(script) and "RATCHET_" not in script:
            why = (f"tests/{TEST_SCRIPT} uses Harbor's /logs or /tests paths, which the process "
                   "layer cannot provide; run it under bwrap, or read $RATCHET_LOGS and "
                   "$RATCHET_TESTS")  # fmt: skip
            return self._result(request, TrialStatus.ERROR, error=why)
        workspace = root / "workspace"
        _copy_environment(task, workspace)
        agent_dir = workspace / AGENT_DIR
        agent_dir.mkdir()
        (agent_dir / "instruction.md").write_text(task.instruction, encoding="utf-8")
        tree = tree.resolve()
        workspace = workspace.resolve()
        command = "exec " + shlex.join([self.python, "-c", AGENT_MAIN, str(tree), self.suite.agent_file,
                                        self.suite.agent_function, str(agent_dir.resolve()), str(workspace)])  # fmt: skip
        env = {**self.agent_env, "PYTHONDONTWRITEBYTECODE": "1",
               "RATCHET_TRAJECTORY": str(agent_dir.resolve() / TRAJECTORY),
               "RATCHET_TASK": task.name, "RATCHET_ATTEMPT": str(request.attempt),
               **model_env(self.suite.model)}  # fmt: skip
        with self.meter(request.folder, env) as session:
            agent = self._execute(session.wrap(command), workspace, {**env, **session.env},
                                  task.agent_timeout, root / "agent.pid",
                                  [(True, tree, tree), *session.binds])  # fmt: skip
            metered = session.usage()
            mismatch = session.check(reported_usage(reported := self._reported(agent_dir)))
        write_private(request.folder / AGENT_LOG, self.redact(agent.output))
        # the agent's own folder leaves the workspace before the verifier sees it
        trajectory = agent_dir / TRAJECTORY
        if trajectory.is_file() and not trajectory.is_symlink():
            shutil.copyfile(trajectory, request.folder / TRAJECTORY)
        shutil.rmtree(agent_dir, ignore_errors=True)
        usage = metered if metered is not None else reported_usage(reported)
        # the metered usage counts; an agent that misreports its own is noted, if it reported
        mismatch = mismatch if metered is not None and "usage" in reported else ""
        if self.stopped.is_set():
            trial = self._result(request, TrialStatus.ERROR, duration=agent.duration, usage=usage,
                                 error="interrupted: the run stopped")  # fmt: skip
        elif agent.timed_out:
            why = (f"the agent ran past the task's {task.agent_timeout:g}s limit "
                   "(task.toml [agent] timeout_sec) and was killed")  # fmt: skip
            trial = self._result(request, TrialStatus.TIMEOUT, duration=agent.duration,
                                 usage=usage, error=why)  # fmt: skip
        else:
            trial = self._verify(request, root, workspace, agent, usage, bwrap)
        if mismatch:
            trial = replace(trial, error="; ".join(e for e in (trial.error, mismatch) if e))
        return trial

    @staticmethod
    def _reported(agent_dir: Path) -> dict[str, object]:
        """What the agent's `run` returned, when it returned a JSON object."""
        result_file = agent_dir / AGENT_RESULT
        with contextlib.suppress(OSError, ValueError):
            if result_file.is_file() and not result_file.is_symlink():
                loaded = json.loads(result_file.read_text(encoding="utf-8")[:1_000_000])
                return loaded if isinstance(loaded, dict) else {}
        return {}

    def _verify(
        self,
        request: TrialRequest,
        root: Path,
        workspace: Path,
        agent: ProcessResult,
        usage: TrialUsage,
        bwrap: bool,
    ) -> TrialResult:
        task = request.task
        tests, logs = root / "tests", root / "logs"
        shutil.copytree(task.tests, tests, symlinks=True)
        (logs / "verifier").mkdir(parents=True)
        (logs / "agent").mkdir()
        tests_at, logs_at = (
            (Path("/tests"), Path("/logs")) if bwrap else (tests.resolve(), logs.resolve())
        )
        env = {**self.verifier_env, "RATCHET_TESTS": str(tests_at), "RATCHET_LOGS": str(logs_at)}
        command = f"exec /bin/sh {shlex.quote(str(tests_at / TEST_SCRIPT))}"
        verifier = self._execute(command, workspace, env, task.verifier_timeout, root / "verifier.pid",
                                 [(True, tests, tests_at), (False, logs, logs_at)])  # fmt: skip
        output = self.redact(verifier.output)
        write_private(request.folder / VERIFIER_LOG, output)
        duration = agent.duration + verifier.duration
        tail = _tail(output)
        if self.stopped.is_set():
            return self._result(request, TrialStatus.ERROR, duration=duration, usage=usage,
                                error="interrupted: the run stopped", verifier_tail=tail)  # fmt: skip
        if verifier.timed_out:
            why = (f"the verifier ran past the task's {task.verifier_timeout:g}s limit "
                   "(task.toml [verifier] timeout_sec) and was killed")  # fmt: skip
            return self._result(request, TrialStatus.TIMEOUT, duration=duration, usage=usage,
                                error=why, verifier_tail=tail)  # fmt: skip
        reward, rewards, missing = read_reward(logs / "verifier")
        if reward is None:
            why = f"{missing}; the verifier exited with code {verifier.returncode}: {_last_line(output)}"
            return self._result(request, TrialStatus.ERROR, rewards=rewards, duration=duration,
                                usage=usage, error=why, verifier_tail=tail)  # fmt: skip
        status = TrialStatus.PASSED if reward >= 1.0 else TrialStatus.FAILED
        return self._result(request, status, reward, rewards, duration, usage, verifier_tail=tail)


def _local_runner(context: RunnerContext) -> LocalRunner:
    from ratchet.suite.metering import ProxyMeter, wants_meter

    suite = context.spec.suite
    assert suite is not None
    meter: Meter = no_meter
    if wants_meter(suite.env, child_environment(allow=suite.env)):
        # without network under bwrap, the proxy's Unix socket is the agent's only way out
        bridge = isinstance(context.sandbox, BwrapSandbox) and not context.sandbox.network
        meter = ProxyMeter(context.spec.proposer.prices, sys.executable, bridge)
    return LocalRunner(suite, context.sandbox, context.scratch, meter)


register_runner("local", _local_runner)
