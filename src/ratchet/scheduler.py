"""N slots at once, one decision at a time.

Each slot runs its experiments in a thread of its own, but only while it holds the
run's one lock: deciding, writing the journal and moving the branch are therefore
never concurrent. A slot lets go of the lock only while it waits (for its proposer or
a measurement), so N slots propose and measure at once and decide in turn. `stop`, from
any thread (the command line's signal handler, a notebook, a worker), stops the slots
by killing what they wait for; the scheduler itself installs no signal handler.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_GRACE = 15.0  # seconds the slots get to record what they were doing, after a stop
REINTERRUPT = 0.1  # seconds between kills of what the slots wait for, while they finish


class Stopped(Exception):
    """A stop (Ctrl-C, SIGTERM, `Run.stop()`): finish the bookkeeping of the experiment in
    flight and stop."""


class Scheduler:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # not re-entrant: `waiting` must let go of it entirely
        self.stopping: str | None = None
        self.failure: BaseException | None = None
        # `stop` may come from any thread at any time, a signal handler in the middle of one
        self._guard = threading.RLock()
        self._deadline: float | None = None
        self._interrupt: Callable[[], None] | None = None

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Let the other slots decide while this one waits; raise `Stopped` after a stop."""
        self.lock.release()
        try:
            yield
        finally:
            self.lock.acquire()
            if self.stopping is not None:  # whatever the wait ended with: it was the stop
                raise Stopped(self.stopping)

    def stop(self, reason: str) -> None:
        """Stop every slot: kill what they wait for, and give them `STOP_GRACE` seconds to
        record it. Safe from any thread and from a signal handler; a stop before `run`
        makes `run` raise `Stopped` at once."""
        with self._guard:
            if self.stopping is None:
                self.stopping = reason
            if self._deadline is None:
                self._deadline = time.monotonic() + STOP_GRACE
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt()

    def run(
        self,
        slots: int,
        next_experiment: Callable[[int], bool],
        interrupt: Callable[[], None],
    ) -> None:
        """Call `next_experiment(slot)` in each slot's thread until it returns False, or
        until a `stop`, which `interrupt` serves (it kills what the slots wait for); then
        `Stopped` is raised for the caller to finish the run. Any thread may call it."""
        threads = [
            threading.Thread(target=self._slot, args=(i, next_experiment), daemon=True,
                             name=f"ratchet-slot-{i}")
            for i in range(slots)
        ]  # fmt: skip
        with self._guard:
            self._interrupt = interrupt
            stopped = self.stopping is not None
        if stopped:
            interrupt()
        try:
            for thread in threads:
                thread.start()
            interrupted_at = 0.0
            while any(t.is_alive() for t in threads):
                deadline, now = self._deadline, time.monotonic()
                if deadline is not None and now >= deadline:
                    break  # a slot stuck past the grace: the next start marks it interrupted
                if deadline is not None and now - interrupted_at >= REINTERRUPT:
                    # again while the slots finish: a command started just as the stop
                    # came had no pidfile yet for the first kill to find
                    interrupted_at = now
                    interrupt()
                time.sleep(0.02)
                if self.failure is not None:
                    self.stop("an internal error")
        finally:
            with self._guard:
                self._interrupt = None
        if self.failure is not None:
            raise self.failure
        if self.stopping is not None:
            raise Stopped(self.stopping)

    def _slot(self, index: int, next_experiment: Callable[[int], bool]) -> None:
        with self.lock:
            try:
                while self.stopping is None and next_experiment(index):
                    pass
            except Stopped:
                pass
            except BaseException as error:  # a bug of ratchet's: stop every slot, then raise
                self.failure = error
                self.stopping = f"an internal error in slot {index}"
