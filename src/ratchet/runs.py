"""A run's life outside the loop: one at a time, creating or reopening it, and keeping its
branch true.

One run at a time per project: `run_lock` holds an `flock` on `.ratchet/run.lock`, which
the operating system lets go of when the holder dies, however it dies. The journal is
written before the branch moves, so after any crash the branch is either where the
journal says or one keep behind it; `reconcile_branch` closes that gap and refuses
anything else.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ratchet import workspace
from ratchet.errors import RunError, RunLocked, UsageError
from ratchet.journal import Journal
from ratchet.journalrecords import RunRecord
from ratchet.specmodel import Spec

LOCK_FILE = "run.lock"
_HOLDER_WAIT = 1.0  # seconds to wait for a holder that has just locked to write its name
# lock files this process holds: the thread that holds each, and how often it entered
_held: dict[Path, tuple[int, int]] = {}
_held_guard = threading.Lock()


@contextmanager
def run_lock(state: Path, name: str, doing: str = "run") -> Iterator[None]:
    """Hold the project's one run lock for the run `name`, or raise `RunLocked` naming
    the run that holds it and its process. Nested holds in one thread are allowed; another
    thread of this process (a second run through the Python API) is refused too. `doing`
    is what the holder does with the run, as a refusal names it (`run`, `finalize`)."""
    state.mkdir(parents=True, exist_ok=True)
    path = (state / LOCK_FILE).resolve()
    with _held_guard:
        if path in _held:
            holder, entered = _held[path]
            if holder != threading.get_ident():
                raise RunLocked(_holder_message(path))
            _held[path] = (holder, entered + 1)
            fd = None
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(_holder_message(path)) from None
            # the lock is ours: now say whose it is, for whoever is refused
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"run": name, "pid": os.getpid(), "doing": doing}).encode())
            _held[path] = (threading.get_ident(), 1)
    try:
        yield
    finally:
        with _held_guard:
            holder, entered = _held[path]
            _held[path] = (holder, entered - 1)
            if entered == 1:
                del _held[path]
                if fd is not None:
                    os.close(fd)  # closing the last descriptor lets go of the flock


def lock_holder(state: Path) -> tuple[str, int] | None:
    """The run holding the project's lock and its process id, or None when none does."""
    path = state / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or ("?", 0)
        return None
    finally:
        os.close(fd)


def _read_holder(path: Path) -> tuple[str, int] | None:
    found = _read_holding(path)
    return (found[0], found[1]) if found else None


def _read_holding(path: Path) -> tuple[str, int, str] | None:
    """The holder's run, process id and what it does with the run."""
    try:
        data = json.loads(path.read_text())
        return str(data["run"]), int(data["pid"]), str(data.get("doing", "run"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _holder_message(path: Path) -> str:
    deadline = time.monotonic() + _HOLDER_WAIT
    holder = _read_holding(path)
    while holder is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the holder locks first and writes its name just after
        holder = _read_holding(path)
    if holder is None:
        return "another ratchet run is starting in this project; wait for it or stop it first"
    run, pid, doing = holder
    if doing != "run":
        return (
            f"'ratchet {doing}' of run '{run}' is working in this project (process {pid}); "
            f"one at a time: wait for it, or stop it with Ctrl-C or 'kill {pid}'"
        )
    return (
        f"run '{run}' is running in this project (process {pid}); one run at a time: "
        f"wait for it, or stop it with Ctrl-C or 'kill {pid}'"
    )


def open_run(project: Path, spec: Spec, journal: Journal, name: str) -> tuple[RunRecord, bool]:
    """The run of that name, created (with its branch) when new; the tree must be clean."""
    dirty = workspace.dirty_files(project, [*spec.scope.outputs, spec.run.results])
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
        # the journal first: a kill before the branch exists leaves a run that nothing
        # was kept in, whose branch the next start creates
        journal.create_run(record)
        journal.audit(name, "run-created", base=base, branch=branch)
        workspace.create_branch(project, name, base)
        return record, False
    at = workspace.resolve(project, f"refs/heads/{branch}")
    if journal.incumbent(name) is not None:
        if at is None:
            raise RunError(
                f"branch {branch} is gone but the journal holds run '{name}'; "
                "restore the branch or choose another --name"
            )
        return record, True
    # nothing was kept yet, not even the baseline (it was killed, or failed, or a proposer
    # could not start): the commit the user runs from now, with their fix, is the base
    head = workspace.head_commit(project)
    if at is None:
        workspace.create_branch(project, name, head)
    elif at != head:
        if at != record.base_commit:
            raise RunError(
                f"branch {branch} is at {at[:7]}, not at the run's base "
                f"{record.base_commit[:7]}; the branch was moved outside ratchet"
            )
        workspace.advance_branch(project, name, head, at)
    if head != record.base_commit:
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
