"""Finalize: the chosen keeps of a run replayed onto its base as `ratchet/<run>-final`.

The keeps left in by the approvals (all but the rejected ones, or with `approved_only`
only the approved) are replayed in order onto the run's base commit: each keep's change
is merged in memory with cherry-pick semantics (its parent as the ancestor), a keep that
no longer applies is skipped, never forced, and the final commit is measured once in a
temporary worktree. The user's branch, index and working tree are never touched; the
project's run lock is held throughout. Git (pygit2) and measuring are imported when a
finalize runs, not when this module is.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratchet.approvals import approval_history, keeps
from ratchet.errors import UsageError
from ratchet.journal import Journal
from ratchet.journalrecords import ExperimentRecord

if TYPE_CHECKING:
    import pygit2

    from ratchet.measure import Measurement
    from ratchet.specmodel import Spec

STATE_DIR = ".ratchet"  # workspace.STATE_DIR, without importing pygit2 for it
FINAL_SUFFIX = "-final"
FINALIZE_DIR = "finalize"  # under .ratchet/: the worktree the final commit is measured in


def final_branch(run: str) -> str:
    from ratchet import workspace

    return workspace.branch_name(f"{run}{FINAL_SUFFIX}")


@dataclass(frozen=True)
class Skipped:
    experiment: int
    reason: str


@dataclass(frozen=True)
class Finalized:
    run: str
    branch: str
    base: str
    commit: str
    approved_only: bool
    previous: str | None  # the -final branch's commit before this finalize replaced it
    replayed: list[int]
    skipped: list[Skipped]
    left_out: list[Skipped]  # rejected keeps, and with --approved-only the pending ones
    metric: str
    goal: str
    measurement: Measurement
    baseline: ExperimentRecord | None
    incumbent: ExperimentRecord | None
    spec_changed: bool  # the spec differs from the one the run was created with
    commits: dict[int, str] = field(default_factory=dict)  # experiment -> replayed commit

    @property
    def value(self) -> float | None:
        return self.measurement.value if self.measurement.ok else None

    def against(self, record: ExperimentRecord | None) -> float | None:
        if self.value is None or record is None or record.value is None:
            return None
        return self.value - record.value

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "run": self.run,
            "branch": self.branch,
            "base_commit": self.base,
            "commit": self.commit,
            "approved_only": self.approved_only,
            "replaced": self.previous,
            "replayed": self.replayed,
            "commits": {str(k): v for k, v in self.commits.items()},
            "skipped": [s.__dict__ for s in self.skipped],
            "left_out": [s.__dict__ for s in self.left_out],
            "metric": self.metric,
            "goal": self.goal,
            "value": self.value,
            "status": m.status,
            "why": m.why,
            "duration": m.duration,
            "baseline": {"experiment": self.baseline.id, "value": self.baseline.value}
            if self.baseline
            else None,
            "incumbent": {"experiment": self.incumbent.id, "value": self.incumbent.value}
            if self.incumbent
            else None,
            "delta_vs_baseline": self.against(self.baseline),
            "delta_vs_incumbent": self.against(self.incumbent),
            "spec_changed": self.spec_changed,
        }


def _committer(repo: pygit2.Repository) -> pygit2.Signature:
    import pygit2

    from ratchet import workspace

    try:
        return repo.default_signature
    except (KeyError, pygit2.GitError):
        fallback = workspace.FALLBACK_IDENTITY
        return pygit2.Signature(fallback["GIT_COMMITTER_NAME"], fallback["GIT_COMMITTER_EMAIL"])


def _checked_out(project: Path, branch: str) -> bool:
    """Whether any worktree of the repository has `branch` checked out."""
    from ratchet import workspace

    listing = workspace.git(project, "worktree", "list", "--porcelain", check=False)
    return f"branch refs/heads/{branch}" in listing.splitlines()


def _choose(
    journal: Journal, run: str, approved_only: bool
) -> tuple[list[ExperimentRecord], list[Skipped]]:
    history = approval_history(journal, run)
    all_keeps = keeps(journal, run)
    if not all_keeps:
        raise UsageError(f"run '{run}' has no keep after its baseline; nothing to finalize")
    chosen: list[ExperimentRecord] = []
    left_out: list[Skipped] = []
    for keep in all_keeps:
        state = history[keep.id][-1].verdict if keep.id in history else "pending"
        if state == "rejected":
            left_out.append(Skipped(keep.id, "rejected"))
        elif approved_only and state != "approved":
            left_out.append(Skipped(keep.id, "not approved"))
        else:
            chosen.append(keep)
    if not chosen:
        if approved_only:
            raise UsageError(
                f"no keep of run '{run}' is approved; approve some with "
                "'ratchet review approve ID', or finalize without --approved-only"
            )
        raise UsageError(f"every keep of run '{run}' is rejected; nothing to finalize")
    return chosen, left_out


def replay(
    repo: pygit2.Repository, base: str, chosen: list[ExperimentRecord]
) -> tuple[str, dict[int, str], list[Skipped]]:
    """Each keep's change merged onto the previous result (cherry-pick), in memory."""
    import pygit2

    head = pygit2.Oid(hex=base)
    tree = repo[head].peel(pygit2.Tree)
    committer = _committer(repo)
    commits: dict[int, str] = {}
    skipped: list[Skipped] = []
    for keep in chosen:
        try:
            original = repo[pygit2.Oid(hex=keep.commit or "")].peel(pygit2.Commit)
            ancestor = repo[pygit2.Oid(hex=keep.parent)].peel(pygit2.Tree)
        except (KeyError, ValueError, pygit2.GitError):
            skipped.append(Skipped(keep.id, "its commit is missing from the repository"))
            continue
        index = repo.merge_trees(ancestor, tree, original.tree)
        if index.conflicts is not None:
            paths = sorted(
                {e.path for entries in index.conflicts for e in entries if e is not None}
            )
            skipped.append(
                Skipped(
                    keep.id,
                    f"it no longer applies (conflict in {', '.join(paths)}): its change "
                    "depends on keeps that were left out or skipped",
                )
            )
            continue
        merged = index.write_tree(repo)
        if merged == tree.id:
            skipped.append(Skipped(keep.id, "its change is already there; nothing to replay"))
            continue
        head = repo.create_commit(
            None, original.author, committer, original.message, merged, [head]
        )
        tree = repo[merged].peel(pygit2.Tree)
        commits[keep.id] = str(head)
    return str(head), commits, skipped


def _remove_worktree(project: Path, path: Path) -> None:
    from ratchet import workspace

    if path.exists():
        workspace.git(project, "worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
    workspace.git(project, "worktree", "prune", check=False)


def measure_commit(project: Path, spec: Spec, run: str, commit: str) -> Measurement:
    """The spec's metric, measured once (seed 0) in a temporary worktree of `commit`."""
    from ratchet import workspace
    from ratchet.environment import Redactor, child_environment
    from ratchet.measure import measure_candidate
    from ratchet.private import private_dir, write_private
    from ratchet.sandbox import ProcessSandbox

    state = private_dir(project / workspace.STATE_DIR)
    ignore = state / ".gitignore"
    if not ignore.exists():
        write_private(ignore, "*\n")  # ratchet's state is never tracked
    path = state / FINALIZE_DIR / run
    _remove_worktree(project, path)  # a leftover of an interrupted finalize
    path.parent.mkdir(parents=True, exist_ok=True)
    workspace.git(project, "worktree", "add", "--detach", "-f", str(path), commit)
    try:
        env = child_environment(allow=spec.sandbox.allow_env)
        return measure_candidate(path, spec.metric, ProcessSandbox(), env, 0, Redactor())
    finally:
        _remove_worktree(project, path)


def finalize(
    project: Path, journal: Journal, spec: Spec, run: str, approved_only: bool = False
) -> Finalized:
    """Build `ratchet/<run>-final` from the chosen keeps, measure it, audit it. It holds
    the project's run lock throughout: a run moving its branch (or a second finalize)
    while the keeps are replayed and measured would give a final branch of no run's
    state, so either one is refused with `RunLocked`, naming the holder."""
    from ratchet.errors import RunLocked
    from ratchet.runs import run_lock

    try:
        with run_lock(project / STATE_DIR, run, doing="finalize"):
            return _finalize(project, journal, spec, run, approved_only)
    except RunLocked as refused:  # only the lock raises it: finalizing takes no other
        raise RunLocked(f"cannot finalize now: {refused}") from None


def _finalize(
    project: Path, journal: Journal, spec: Spec, run: str, approved_only: bool
) -> Finalized:
    import pygit2

    from ratchet import workspace

    record = journal.run(run)
    if record is None:
        raise UsageError(f"no run named '{run}'")
    branch = final_branch(run)
    if journal.run(f"{run}{FINAL_SUFFIX}") is not None:
        raise UsageError(f"run '{run}{FINAL_SUFFIX}' owns branch {branch}; finalize cannot use it")
    if _checked_out(project, branch):
        raise UsageError(
            f"branch {branch} is checked out; switch to another branch before finalizing again"
        )
    chosen, left_out = _choose(journal, run, approved_only)
    repo = pygit2.Repository(str(project))
    commit, commits, skipped = replay(repo, record.base_commit, chosen)
    previous = workspace.resolve(project, f"refs/heads/{branch}")
    workspace.git(project, "update-ref", f"refs/heads/{branch}", commit)
    measurement = measure_commit(project, spec, run, commit)
    result = Finalized(
        run,
        branch,
        record.base_commit,
        commit,
        approved_only,
        previous,
        list(commits),
        skipped,
        left_out,
        spec.metric.name,
        spec.metric.goal,
        measurement,
        journal.baseline(run),
        journal.incumbent(run),
        spec.digest() != record.spec_digest,
        commits,
    )
    journal.audit(
        run,
        "finalized",
        branch=branch,
        commit=commit,
        base=record.base_commit,
        approved_only=approved_only,
        replaced=previous,
        replayed=result.replayed,
        skipped=[s.experiment for s in skipped],
        left_out=[s.experiment for s in left_out],
        metric=spec.metric.name,
        value=result.value,
        status=measurement.status,
    )
    return result
