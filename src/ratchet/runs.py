"""A run's life outside the loop: creating or reopening it, and keeping its branch true.

The journal is written before the branch moves, so after any crash the branch is either
where the journal says or one keep behind it; `reconcile_branch` closes that gap and
refuses anything else.
"""

from __future__ import annotations

import time
from pathlib import Path

from ratchet import workspace
from ratchet.errors import RunError, UsageError
from ratchet.journal import Journal, RunRecord
from ratchet.spec import Spec


def open_run(project: Path, spec: Spec, journal: Journal, name: str) -> tuple[RunRecord, bool]:
    """The run of that name, created (with its branch) when new; the tree must be clean."""
    dirty = workspace.dirty_files(project)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise UsageError(
            f"the working tree has uncommitted changes ({shown}); commit or stash them first"
        )
    branch = workspace.branch_name(name)
    record = journal.run(name)
    if record is None:
        if workspace.resolve(project, f"refs/heads/{branch}"):
            raise UsageError(
                f"branch {branch} exists but the journal has no run '{name}'; "
                "choose another --name or delete the branch"
            )
        base = workspace.head_commit(project)
        record = RunRecord(
            name,
            branch,
            base,
            spec.digest(),
            spec.metric.name,
            spec.metric.goal,
            time.time(),
        )
        workspace.create_branch(project, name, base)
        journal.create_run(record)
        journal.audit(name, "run-created", base=base, branch=branch)
        return record, False
    if workspace.resolve(project, f"refs/heads/{branch}") is None:
        raise RunError(
            f"branch {branch} is gone but the journal holds run '{name}'; "
            "restore the branch or choose another --name"
        )
    head = workspace.head_commit(project)
    if head != record.base_commit and not journal.experiments(name, limit=1):
        # it stopped before measuring anything (a proposer that could not start, say):
        # the fix the user committed since is what it should start from
        workspace.advance_branch(project, name, head, record.base_commit)
        journal.move_run_base(name, head)
        journal.audit(name, "run-base-moved", base=head, was=record.base_commit)
        record = journal.run(name) or record
    return record, True


def reconcile_branch(project: Path, journal: Journal, run: RunRecord) -> None:
    """Bring the branch up to the journal's incumbent after a kill between the two."""
    incumbent = journal.incumbent(run.name)
    head = workspace.resolve(project, f"refs/heads/{run.branch}")
    if incumbent is None or incumbent.commit is None or incumbent.commit == head:
        return
    if workspace.resolve(project, f"{incumbent.commit}^") == head and head is not None:
        workspace.advance_branch(project, run.name, incumbent.commit, head)
        journal.audit(run.name, "branch-repaired", commit=incumbent.commit)
        return
    raise RunError(
        f"branch {run.branch} is at {str(head)[:7]} but the journal's incumbent is "
        f"{incumbent.commit[:7]}; the branch was moved outside ratchet"
    )
