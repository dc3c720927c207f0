"""The processes a test itself starts: waiting on the files they write, and asking whether
one of them is still alive. Tests never look for processes machine-wide."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Until `condition()` holds (the event a test waits on); fail after `timeout`, saying
    `what` never happened. The sleep is only the interval between two looks."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting after {timeout:g} s: {what}"
        time.sleep(0.02)


def wait_for(*paths: Path, timeout: float = 60) -> None:
    """Until every path exists (a flag or pid file a child writes); fail after `timeout`."""
    wait_until(lambda: all(p.exists() for p in paths),
               f"all of {[str(p) for p in paths]} to appear", timeout)  # fmt: skip


def read_pid(path: Path, timeout: float = 60) -> int:
    """The pid a child wrote into `path` (waiting until the whole number is there)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if text.endswith("\n"):
            return int(text)
        assert time.monotonic() < deadline, f"{path} never held a pid"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped yet counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal said it exists
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def wait_dead(pid: int, timeout: float = 30) -> bool:
    """Whether `pid` is gone within `timeout` (a killed group can take a moment)."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


_PR_SET_CHILD_SUBREAPER = 36
_BEFORE: set[int] = set()  # this process's descendants when `adopting` began


def _parents() -> dict[int, tuple[int, str]]:
    """Every live process's parent and state, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def living_descendants() -> list[int]:
    """This test process's living descendants (zombies left out): with `adopting` on,
    that includes every orphan its children left behind, however far they wandered."""
    table = _parents()
    me, found, frontier = os.getpid(), [], [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, state) in table.items():
            # what ran before `adopting` began (a session's docker daemon) is not the test's
            if ppid == parent and pid != me and pid not in _BEFORE:
                frontier.append(pid)
                if state not in {"Z", "X"}:
                    found.append(pid)
    return sorted(found)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


@contextmanager
def adopting() -> Iterator[None]:
    """Make this test process the subreaper of everything it starts (Linux): a process
    whose parent dies is re-parented here rather than to init, so that `living_descendants`
    sees it. Afterwards kill whatever of it is still alive and reap the zombies."""
    import ctypes

    import pytest

    if not Path("/proc/self/stat").exists():
        pytest.skip("tracking orphaned descendants needs Linux's /proc")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not permitted here")
    _BEFORE.update(living_descendants())
    try:
        yield
    finally:
        for pid in living_descendants():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        _reap()
        _BEFORE.clear()


def _reap() -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if not living_descendants():
                return
            time.sleep(0.02)


def descendants_gone(timeout: float = 15) -> bool:
    """Whether every descendant has ended within `timeout` (killed groups take a moment)."""
    deadline = time.monotonic() + timeout
    while living_descendants():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
