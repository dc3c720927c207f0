"""Where trials run: the plug point of harness mode, one small Protocol and a registry.

A runner gets the trials to run (a task, an attempt, the folder to leave its record
in) and the candidate's tree, and returns one `TrialResult` per trial, in any order. It
never writes the journal; the suite judge records what comes back.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ratchet.sandbox import Sandbox
from ratchet.spec import SpecError
from ratchet.specmodel import Spec
from ratchet.suite.tasks import Task
from ratchet.suite.trials import TrialResult


@dataclass(frozen=True)
class TrialRequest:
    task: Task
    attempt: int
    folder: Path  # the trial's record goes here (trials.TRIAL_RECORD, AGENT_LOG, ...)


class TrialRunner(Protocol):
    name: str

    def run_trials(self, requests: Sequence[TrialRequest], tree: Path) -> list[TrialResult]:
        """Run the agent of the candidate checked out at `tree` on each request's task,
        then its verifier; one result per request (an infrastructure fault is an `error`
        trial, never an exception), each record written into its request's folder."""
        ...

    def interrupt(self) -> None:
        """Stop every trial in flight (a stop of the run); each comes back as an error."""
        ...


@dataclass(frozen=True)
class RunnerContext:
    """What a runner is made from: the spec, the project, the run's sandbox for the
    agent, and a scratch folder under `.ratchet/` for workspaces."""

    spec: Spec
    project: Path
    sandbox: Sandbox
    scratch: Path


RunnerFactory = Callable[[RunnerContext], TrialRunner]
RUNNERS: dict[str, RunnerFactory] = {}


def register_runner(name: str, factory: RunnerFactory) -> None:
    RUNNERS[name] = factory


def make_runner(context: RunnerContext) -> TrialRunner:
    name = context.spec.suite.runner if context.spec.suite else "local"
    if name not in RUNNERS:  # each runner's module registers itself when imported
        with contextlib.suppress(ImportError):
            importlib.import_module(f"ratchet.suite.{name}")
    factory = RUNNERS.get(name)
    if factory is None:
        raise SpecError(f"[suite] runner: {name!r} is not available in this ratchet")
    return factory(context)
