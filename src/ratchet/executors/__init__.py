"""Where measurements run: in the slot's own worktree on this machine, or on Ray.

The engine hands an executor a slot whose worktree holds the tree to measure (the
candidate, or the incumbent being re-measured) and gets a `Measurement` back. An
executor never writes the journal: deciding is the engine's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from ratchet.measure import Measurement, measure_candidate
from ratchet.restore import GitPristine
from ratchet.sandbox import Sandbox
from ratchet.specmodel import MetricSpec, Spec
from ratchet.workspace import Slot

Redact = Callable[[str], str]


class Executor(Protocol):
    name: str

    def measure(
        self,
        slot: Slot,
        tree: str,
        metric: MetricSpec,
        env: Mapping[str, str],
        seed: int,
        redact: Redact,
    ) -> Measurement:
        """Measure `tree` (a git tree or commit id, also checked out in `slot`) once."""
        ...

    def interrupt(self) -> None:
        """Stop every measurement in flight (a stop): each comes back, failed, at once."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """The measurement runs in the slot's worktree, in the run's sandbox.

    What the command changes or creates there is undone from the slot's git objects
    before the evaluate step (ratchet.restore); `protected` are the spec's globs.
    """

    name = "local"

    def __init__(self, sandbox: Sandbox, protected: list[str] | None = None) -> None:
        self.sandbox = sandbox
        self.protected = list(protected or [])

    def measure(
        self,
        slot: Slot,
        tree: str,
        metric: MetricSpec,
        env: Mapping[str, str],
        seed: int,
        redact: Redact,
    ) -> Measurement:
        pristine = GitPristine(slot.repo, tree)
        return measure_candidate(slot.path, metric, self.sandbox, env, seed, redact,
                                 pristine=pristine, protected=self.protected)  # fmt: skip

    def interrupt(self) -> None:
        pass  # the engine kills the slots' process groups itself

    def close(self) -> None:
        pass


def make_executor(spec: Spec, project: Path, sandbox: Sandbox) -> Executor:
    if spec.executor.kind == "ray":
        from ratchet.executors.ray import RayExecutor  # imports ray: only when used

        return RayExecutor(spec, project, sandbox)
    return LocalExecutor(sandbox, spec.scope.protected)
