"""N slots at once, one decision at a time.

Each slot runs its experiments in a thread of its own, but only while it holds the
run's one lock: deciding, writing the journal and moving the branch are therefore
never concurrent. A slot lets go of the lock only while it waits (for its proposer or
a measurement), so N slots propose and measure at once and decide in turn. Signals
reach the main thread, which stops the slots by killing what they wait for.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_GRACE = 15.0  # seconds the slots get to record what they were doing, after a stop


class Stopped(Exception):
    """Ctrl-C or SIGTERM: finish the bookkeeping of the experiment in flight and stop."""


class Scheduler:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # not re-entrant: `waiting` must let go of it entirely
        self.stopping: str | None = None
        self.failure: BaseException | None = None

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

    def run(
        self,
        slots: int,
        next_experiment: Callable[[int], bool],
        interrupt: Callable[[], None],
    ) -> None:
        """Call `next_experiment(slot)` in each slot's thread until it returns False.

        SIGINT or SIGTERM stops every slot: `interrupt` kills what they wait for, and they
        get `STOP_GRACE` seconds to record it; then `Stopped` is raised for the caller to
        finish the run. Call it from the main thread, which alone receives signals.
        """
        deadline: list[float] = []

        def stop(reason: str) -> None:
            if self.stopping is None:
                self.stopping = reason
                deadline.append(time.monotonic() + STOP_GRACE)
            interrupt()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop(signal.Signals(signum).name)

        threads = [
            threading.Thread(target=self._slot, args=(i, next_experiment), daemon=True,
                             name=f"ratchet-slot-{i}")
            for i in range(slots)
        ]  # fmt: skip
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                if deadline and time.monotonic() >= deadline[0]:
                    break  # a slot stuck past the grace: the next start marks it interrupted
                time.sleep(0.02)  # a join would hold off the signal handlers
                if self.failure is not None:
                    stop("an internal error")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
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


class SignalGate:
    """Turns SIGINT and SIGTERM into `Stopped`, raised in the main thread.

    Slots record keeps in threads of their own, which signals never interrupt, so a keep's
    two writes (the journal, then the branch) are never cut apart by a stop.
    """

    def handler(self, signum: int, frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handler) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
