"""`runner = "harbor"` as a TrialRunner: the judge's trial requests run through `run_harbor`.

Harbor runs `-k` attempts of every task it is given, numbered from 0; the judge asks for
given attempts (a later look asks for attempts k..2k-1, and only of the tasks that
decide). So requests are grouped by the attempts they ask for, one Harbor job per group,
and Harbor's i-th attempt becomes the group's i-th attempt, its record written into the
request's folder. The agent is the candidate's tree's `[suite] agent` as an import path
(`pkg/agent.py:Harness` -> `pkg.agent:Harness`), the tree first on `PYTHONPATH`; the
task model goes to it as `RATCHET_TASK_MODEL`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ratchet.specmodel import SuiteSpec
from ratchet.suite.harbor import run_harbor
from ratchet.suite.local import model_env
from ratchet.suite.runners import TrialRequest
from ratchet.suite.trials import TrialResult, TrialStatus, TrialUsage

JOBS = "harbor-jobs"  # under the runner's scratch folder
SLACK = 600.0  # seconds over the tasks' own limits before Harbor is killed


def import_path(agent: str) -> str:
    """`[suite] agent` ("dir/agent.py:Harness") as Harbor's `module:Class`."""
    file, _, name = agent.partition(":")
    return f"{file.removesuffix('.py').replace('/', '.')}:{name}"


class HarborRunner:
    name = "harbor"

    def __init__(self, suite: SuiteSpec, tasks_dir: Path, scratch: Path) -> None:
        self.suite, self.tasks_dir, self.scratch = suite, tasks_dir, scratch
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.processes: list[subprocess.Popen[bytes]] = []

    def interrupt(self) -> None:
        self.stopped.set()
        with self.lock:
            processes = list(self.processes)
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    def _started(self, process: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.processes.append(process)
        if self.stopped.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    def run_trials(self, requests: Sequence[TrialRequest], tree: Path) -> list[TrialResult]:
        self.stopped.clear()
        by_task: dict[str, list[TrialRequest]] = {}
        for request in requests:
            by_task.setdefault(request.task.name, []).append(request)
        groups: dict[tuple[int, ...], list[str]] = {}
        for name, asked in by_task.items():
            attempts = tuple(sorted(r.attempt for r in asked))
            groups.setdefault(attempts, []).append(name)
        folders = {(r.task.name, r.attempt): r.folder for r in requests}
        results: list[TrialResult] = []
        for attempts, names in sorted(groups.items()):
            results += self._job(names, attempts, folders, tree, requests)
        return results

    def _job(
        self,
        names: list[str],
        attempts: tuple[int, ...],
        folders: dict[tuple[str, int], Path],
        tree: Path,
        requests: Sequence[TrialRequest],
    ) -> list[TrialResult]:
        if self.stopped.is_set():
            return [TrialResult(n, a, TrialStatus.ERROR, None, {}, 0.0, TrialUsage(),
                                error="interrupted: the run stopped")
                    for n in names for a in attempts]  # fmt: skip
        tasks = {r.task.name: r.task for r in requests}
        longest = max(tasks[n].agent_timeout + tasks[n].verifier_timeout for n in names)
        rounds = math.ceil(len(names) * len(attempts) / self.suite.concurrency)
        python_path = os.pathsep.join(
            p for p in (str(tree.resolve()), os.environ.get("PYTHONPATH", "")) if p
        )
        job = run_harbor(
            self.tasks_dir,
            names,
            import_path(self.suite.agent),
            self.scratch / JOBS,
            lambda name, i: folders[(name, attempts[i])],
            concurrency=self.suite.concurrency,
            attempts=len(attempts),
            timeout_s=longest * rounds + SLACK,
            env=self.suite.env,
            extra_env={"PYTHONPATH": python_path, **model_env(self.suite.model)},
            started=self._started,
        )
        # Harbor numbers its attempts from 0; these are the attempts the judge asked for
        return [replace(t, attempt=attempts[t.attempt]) for t in job.trials]
