"""The `process` layer: a new session and process group, a hard budget, capped output.

POSIX calls only, so that it works on Linux and macOS alike. The budget is enforced by
SIGTERM to the whole group, a grace period, then SIGKILL to the group; whatever is
left of the group when the command ends is killed too, so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ratchet.private import write_private

HEAD_BYTES = 4 * 1024  # the start of the output: how the command began
TAIL_BYTES = 16 * 1024  # the end of the output: where metrics and tracebacks are
READ_CHUNK = 64 * 1024
DRAIN_AFTER_EXIT = 0.5  # seconds to keep reading after exit from a pipe a stray child holds


@dataclass(frozen=True)
class ProcessResult:
    returncode: int | None  # None when killed for the budget
    timed_out: bool
    duration: float
    output: str  # head and tail of stdout+stderr, with a marker where bytes were dropped
    output_bytes: int  # how much the command printed in all


class CappedOutput:
    """Keeps the first HEAD_BYTES and the last TAIL_BYTES of a stream."""

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: -self.tail_limit]

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_limit :])
        dropped = self.total - len(self.head) - len(tail)
        marker = f"\n[... {dropped} bytes of output dropped ...]\n".encode() if dropped else b""
        return (bytes(self.head) + marker + tail).decode("utf-8", errors="replace")


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pidfile_for(worktree: Path) -> Path:
    """Where a slot's running command records its process group, beside the worktree."""
    return worktree.parent / f"{worktree.name}.pid"


def kill_leftover(pidfile: Path) -> bool:
    """Kill the process group a dead ratchet left running in a slot; True if one was."""
    try:
        pgid = int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return False
    pidfile.unlink(missing_ok=True)
    try:
        if os.getpgid(pgid) != pgid:
            return False  # the number now belongs to an unrelated process
    except ProcessLookupError:
        return False
    _kill_group(pgid, signal.SIGKILL)
    return True


def run_process(
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    budget: float,
    grace: float = 5.0,
    pidfile: Path | None = None,
) -> ProcessResult:
    """Run `command` with /bin/sh in `cwd`; kill its whole group at `budget` seconds.

    With `pidfile`, the group id is written there while the command runs, so that a
    ratchet killed with SIGKILL can kill the orphaned group when it starts again.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # no preexec_fn: the fast vfork path, and safe in threads
    )
    assert proc.stdout is not None
    pgid = proc.pid  # a new session's leader: its pid is the group id
    if pidfile is not None:
        write_private(pidfile, str(pgid))
    output = CappedOutput()
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = start + budget
    exited_at: float | None = None
    timed_out = False
    term_sent_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > DRAIN_AFTER_EXIT:
                break  # a child that left the group still holds the pipe: stop listening
            if exited_at is None and now >= deadline and term_sent_at is None:
                timed_out = True
                term_sent_at = now
                _kill_group(pgid, signal.SIGTERM)
            if term_sent_at is not None and now - term_sent_at >= grace:
                _kill_group(pgid, signal.SIGKILL)
                term_sent_at = float("inf")  # sent once
            wait = 0.05 if exited_at is not None or term_sent_at is not None else deadline - now
            if not selector.select(timeout=max(0.0, min(wait, 0.25))):
                continue
            try:
                chunk = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                break
            output.feed(chunk)
    finally:
        selector.close()
        proc.stdout.close()
        _kill_group(pgid, signal.SIGKILL)  # nothing of the command outlives it
        returncode = proc.wait()
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)
    return ProcessResult(
        returncode=None if timed_out else returncode,
        timed_out=timed_out,
        duration=time.monotonic() - start,
        output=output.text(),
        output_bytes=output.total,
    )


def limit_resources(memory: int | None) -> str:
    """A shell prefix that sets the limits for the command after it.

    Not a `preexec_fn`: ratchet runs slots in threads, and Python documents `preexec_fn`
    as unsafe there (the child may deadlock between fork and exec)."""
    prefix = "ulimit -c 0; "  # no core dumps
    if memory is not None:
        prefix += f"ulimit -v {max(1, memory // 1024)} || exit 125; "
    return prefix


class ProcessSandbox:
    """Own session and process group, the budget, capped output, a private temp folder.

    With `memory`, the address space is limited (a huge allocation fails instead of
    swapping the machine to death); leave it unset when GPUs are used, since CUDA maps
    far more address space than it uses.
    """

    name = "process"

    def __init__(self, memory: int | None = None) -> None:
        self.memory = memory

    def run(
        self,
        command: str,
        cwd: Path,
        env: Mapping[str, str],
        budget: float,
        grace: float,
        pidfile: Path | None = None,
    ) -> ProcessResult:
        with tempfile.TemporaryDirectory(prefix="ratchet-tmp-") as tmp:
            private = {**env, "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp}
            limits = limit_resources(self.memory)
            return run_process(limits + command, cwd, private, budget, grace, pidfile)
