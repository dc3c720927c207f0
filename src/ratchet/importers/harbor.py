"""Harbor: a folder of tasks (`instruction.md`, `task.toml`, `environment/`, `tests/`)
becomes a harness-mode spec, whose `[suite]` is the metric."""

from __future__ import annotations

import shutil
from pathlib import Path

from ratchet.errors import UsageError
from ratchet.importers import Imported, relative, toml_list, toml_string

HOLDOUT_FROM = 8  # tasks: from this many on, a quarter is held out


def find_tasks(folder: Path) -> list[str]:
    """The task folders under `folder`: each holds `task.toml` and `instruction.md`."""
    return sorted(
        p.parent.name for p in folder.glob("*/task.toml") if (p.parent / "instruction.md").is_file()
    )


def _agent(project: Path) -> tuple[str, list[str], str]:
    """The harness's entry point, its editable files, and what was assumed."""
    if (project / "agent.py").is_file():
        return (
            "agent.py:run",
            ["agent.py"],
            "the agent is agent.py (run); edit [suite] agent if not",
        )
    if (project / "agent" / "__init__.py").is_file():
        return (
            "agent/__init__.py:run",
            ["agent/**"],
            "the agent is the package agent/ (run); edit [suite] agent if not",
        )
    return (
        "agent.py:run",
        ["agent.py"],
        ("no agent.py here: [suite] agent names agent.py:run; write it, or point agent at yours"),
    )


def _tracked(project: Path, folder: str) -> bool:
    """Whether git tracks anything under `folder` (relative to the project)."""
    from ratchet import workspace

    if folder.startswith("..") or not workspace.resolve(project, "HEAD"):
        return False
    prefix = folder.rstrip("/") + "/"
    return any(f.startswith(prefix) for f in workspace.tracked_files(project))


def import_harbor(project: Path, where: Path) -> Imported:
    folder = where if where.is_dir() else where.parent
    tasks = find_tasks(folder)
    if not tasks:
        raise UsageError(
            f"{folder} holds no Harbor task (a folder with task.toml and instruction.md)"
        )
    agent, editable, note = _agent(project)
    runner = "harbor" if shutil.which("harbor") else "local"
    notes = [f"{len(tasks)} tasks in {relative(project, folder)}", note,
             f"runner {runner}" + ("" if runner == "harbor" else ": no harbor command on PATH")]  # fmt: skip
    notes.append("[suite] model: assumed gpt-5-mini for the task agent and the proposer")
    holdout = 0.25 if len(tasks) >= HOLDOUT_FROM else 0.0
    where_tasks = relative(project, folder)
    if holdout and _tracked(project, where_tasks):
        # a tracked task is in every proposer's worktree: no holdout could stay sealed
        holdout = 0.0
        notes.append(
            f"{where_tasks} is tracked by git, so no task can be held out sealed: holdout = 0. "
            f"For a sealed holdout, untrack and ignore it (git rm -r --cached {where_tasks} "
            f"&& echo {where_tasks}/ >> .gitignore) and set [suite] holdout = 0.25"
        )
    text = f"""\
# ratchet.toml, imported from a folder of Harbor tasks (ratchet init --from harbor).
# Harness mode: the suite's mean reward is the metric. See docs/importers.md.

[scope]
editable = {toml_list(editable)}       # the task agent: what proposals change
protected = {toml_list([relative(project, folder)])}   # the tasks and their verifiers

[metric]
name = "reward"
goal = "maximize"

[suite]
tasks = {toml_string(relative(project, folder) + "/")}   # {len(tasks)} tasks
agent = {toml_string(agent)}
runner = "{runner}"                     # "local" (ratchet's sandboxes) or "harbor" (its CLI)
concurrency = 4
attempts = 1
holdout = {holdout}                      # a quarter held out from 8 tasks on
env = ["OPENAI_API_KEY"]                 # the only variables the task agent gets
model = "gpt-5-mini"                     # the task agent's model, and the proposer's unless set

[proposer]
kind = "llm"                            # same model as the task agent unless set
"""
    return Imported(text, notes)
