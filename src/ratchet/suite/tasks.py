"""A suite's tasks, in Harbor's folder format, and their split into search and holdout.

A task is a folder holding `instruction.md` (what the agent is asked), `task.toml`
(`[agent] timeout_sec`, `[verifier] timeout_sec`), `environment/` (the files the agent's
workspace starts with; a Dockerfile there is Harbor's and is not copied) and
`tests/test.sh` (the verifier, which writes `/logs/verifier/reward.txt` or `reward.json`).

Tasks are read from the project's own folder, never from a candidate's tree: a proposal
cannot change a verifier. The holdout is sealed: its tasks may not be files git tracks,
or every proposer's worktree would hold their instructions and tests.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ratchet.spec import SpecError
from ratchet.specmodel import SuiteSpec
from ratchet.suite.trials import Split as Split  # re-exported: callers import it from here

INSTRUCTION = "instruction.md"
TASK_TOML = "task.toml"
ENVIRONMENT = "environment"
TESTS = "tests"
TEST_SCRIPT = "test.sh"
DEFAULT_AGENT_TIMEOUT = 600.0  # Harbor's default, when task.toml names none
DEFAULT_VERIFIER_TIMEOUT = 600.0
# Harbor builds its container from these; the local runner copies every other file
NOT_COPIED = frozenset({"Dockerfile", "docker-compose.yaml", "docker-compose.yml"})


@dataclass(frozen=True)
class Task:
    name: str
    path: Path  # the task's folder
    split: Split
    agent_timeout: float
    verifier_timeout: float

    @property
    def instruction(self) -> str:
        return (self.path / INSTRUCTION).read_text(encoding="utf-8", errors="replace")

    @property
    def environment(self) -> Path:
        return self.path / ENVIRONMENT

    @property
    def tests(self) -> Path:
        return self.path / TESTS


@dataclass(frozen=True)
class Suite:
    root: Path
    tasks: tuple[Task, ...]

    def split(self, which: Split) -> tuple[Task, ...]:
        return tuple(t for t in self.tasks if t.split == which)

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)


def _timeouts(path: Path) -> tuple[float, float]:
    toml = path / TASK_TOML
    if not toml.is_file():
        return DEFAULT_AGENT_TIMEOUT, DEFAULT_VERIFIER_TIMEOUT
    try:
        data = tomllib.loads(toml.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(
            f"[suite] tasks: {path.name}/{TASK_TOML} is not valid TOML ({error})"
        ) from None
    found = []
    for section, default in (
        ("agent", DEFAULT_AGENT_TIMEOUT),
        ("verifier", DEFAULT_VERIFIER_TIMEOUT),
    ):
        table = data.get(section, {})
        value = table.get("timeout_sec", default) if isinstance(table, dict) else default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise SpecError(
                f"[suite] tasks: {path.name}/{TASK_TOML} [{section}] timeout_sec must be a "
                f"positive number of seconds, got {value!r}"
            )
        found.append(float(value))
    return found[0], found[1]


def holdout_names(names: list[str], holdout: float | list[str]) -> set[str]:
    """The holdout's task names: those listed, or a fraction of the tasks chosen by a hash
    of each name, so that the split never changes while the names stay the same (adding a
    task moves no other task across). At least one task stays in the search split."""
    if isinstance(holdout, list):
        unknown = sorted(set(holdout) - set(names))
        if unknown:
            raise SpecError(f"[suite] holdout: no task named {unknown[0]!r} in the suite")
        if len(set(holdout)) >= len(names):
            raise SpecError("[suite] holdout: every task is held out; leave some to search on")
        return set(holdout)
    if holdout <= 0 or len(names) < 2:
        return set()
    count = min(len(names) - 1, max(1, math.floor(holdout * len(names) + 0.5)))
    ranked = sorted(names, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    return set(ranked[:count])


def load_suite(project: Path, spec: SuiteSpec) -> Suite:
    """Every task folder under `[suite] tasks` (one holding `instruction.md`), sorted by
    name, each with its split and timeouts; a one-line SpecError for a broken suite."""
    root = (project / spec.tasks).resolve()
    if not root.is_dir():
        raise SpecError(f"[suite] tasks: folder {spec.tasks!r} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / INSTRUCTION).is_file())
    if not folders:
        raise SpecError(
            f"[suite] tasks: no task in {spec.tasks!r} (a task is a folder with {INSTRUCTION})"
        )
    for folder in folders:
        if not (folder / TESTS / TEST_SCRIPT).is_file():
            raise SpecError(f"[suite] tasks: {folder.name} has no {TESTS}/{TEST_SCRIPT}")
    held = holdout_names([f.name for f in folders], spec.holdout)
    tasks = []
    for folder in folders:
        agent, verifier = _timeouts(folder)
        split = Split.HOLDOUT if folder.name in held else Split.SEARCH
        tasks.append(Task(folder.name, folder, split, agent, verifier))
    return Suite(root, tuple(tasks))


def check_sealed(suite: Suite, tracked: list[str], project: Path) -> None:
    """A holdout task that git tracks would be in every proposer's worktree: refuse it."""
    try:
        relative = suite.root.relative_to(project.resolve())
    except ValueError:
        return  # the suite lives outside the repository
    tracked_set = set(tracked)
    for task in suite.split(Split.HOLDOUT):
        prefix = f"{(relative / task.name).as_posix()}/"
        if any(path.startswith(prefix) for path in tracked_set):
            raise SpecError(
                f"[suite] holdout: task {task.name!r} is tracked by git, so every proposer's "
                "worktree would hold its instruction and tests; keep the suite's tasks out of "
                "git (.gitignore) or outside the repository"
            )
