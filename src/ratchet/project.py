"""The public Python API: a project, its runs, and the records of their experiments.

`ratchet.Project(path)` finds the project's root and validates its spec. `project.run(name)`
is a handle on the run of that name: read it (`experiments()`), or start it. A started run
lives in a background thread of its own, so a notebook, a worker thread or the command
line can drive it the same way: iterate it to get each `ExperimentRecord` as it is
decided, `stop()` it from any thread, `wait()` for how it ended. The engine underneath
runs its slots in threads of their own; a background thread that feeds a queue keeps it
that way, where an iteration that drove the loop would have to turn the slots inside out
and could not be stopped from elsewhere while it waits on a measurement.

Signal handling is the caller's: the command line installs handlers that call `stop`.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ratchet.errors import UsageError

if TYPE_CHECKING:
    from ratchet.engine import Engine
    from ratchet.events import Event, RunStopped
    from ratchet.journal import ExperimentRecord, Journal, RunRecord
    from ratchet.judging import NoiseReport
    from ratchet.proposers.base import Proposer
    from ratchet.proposers.python import ProposeFunction, ProposerObject
    from ratchet.spec import Spec

_POLL = 0.1  # seconds a wait blocks at once, so that Ctrl-C reaches the waiting thread
_END = object()  # the queue's last item: the run has ended
T = TypeVar("T")


class Project:
    """A git repository that ratchet improves, with its validated spec.

    Raises `ratchet.errors.UsageError` (one line saying what and where) when `path` is
    not inside a git repository or the spec is missing or invalid.
    """

    def __init__(self, path: str | os.PathLike[str] = ".") -> None:
        from ratchet import workspace

        try:
            self.root = workspace.project_root(Path(path).resolve())
        except workspace.GitError as error:
            raise UsageError(str(error)) from None
        self.spec = self.load_spec()

    def load_spec(self) -> Spec:
        """The spec as the project's current commit has it, validated against its files."""
        from ratchet import workspace
        from ratchet.spec import load_spec

        root = self.root
        files = workspace.tracked_files(root) if workspace.resolve(root, "HEAD") else []
        return load_spec(root, files)

    def run(
        self,
        name: str | None = None,
        *,
        max_experiments: int | None = None,
        max_time: float | None = None,
        parallel: int | None = None,
        proposer: ProposeFunction | ProposerObject | None = None,
        observer: Callable[[Event], None] | None = None,
    ) -> Run:
        """The run `name` (default: the spec's `[run] name`), not started yet: start it
        with `start()`, a `with` block or by iterating it; read it with `experiments()`.

        `max_experiments` and `max_time` (seconds) override the spec's limits, `parallel`
        its `[executor] parallel`. `proposer` replaces the spec's proposer: a function
        `(workdir: Path, brief: dict) -> Proposal`, or an object with that `propose`
        method (and optionally `observe(outcome)`). `observer` receives every event of
        the run (`ratchet.events`), from the run's threads."""
        if max_experiments is not None and max_experiments < 1:
            raise UsageError("max_experiments must be at least 1")
        if max_time is not None and max_time <= 0:
            raise UsageError("max_time must be a positive number of seconds")
        if parallel is not None and not 1 <= parallel <= 256:
            raise UsageError("parallel must be between 1 and 256")
        return Run(self, name or self.spec.run.name, max_experiments, max_time, parallel,
                   proposer, observer)  # fmt: skip

    def runs(self) -> list[RunRecord]:
        """Every run of the project, oldest first (none before the first `run`)."""
        journal = self._journal()
        if journal is None:
            return []
        try:
            return journal.runs()
        finally:
            journal.close()

    def noise(self, repeats: int = 5, name: str | None = None) -> NoiseReport:
        """Measure the incumbent of the run `name` `repeats` times (in a new run, the
        baseline first): how noisy is the metric? Ctrl-C (KeyboardInterrupt) stops it,
        keeping the measurements taken in the journal."""
        return self.measure_noise(repeats, name).wait()

    def measure_noise(self, repeats: int = 5, name: str | None = None) -> Task[NoiseReport]:
        """`noise`, started in a background thread: `stop()` it from any thread, `wait()`
        for its report. It holds the run lock, as a run does."""
        from ratchet.engine import Engine, open_journal, state_dir
        from ratchet.runs import run_lock

        if repeats < 2:
            raise UsageError("noise: repeats must be at least 2")
        spec = self.load_spec()
        run_name = name or spec.run.name
        task: Task[NoiseReport] = Task()

        def work() -> NoiseReport:
            with run_lock(state_dir(self.root), run_name):
                journal = open_journal(self.root, verify=True)
                try:
                    engine = Engine(self.root, spec, journal, run_name=run_name)
                    task.attach(engine)
                    return engine.measure_noise(repeats)
                finally:
                    journal.close()

        return task.start(work, "ratchet-noise")

    def _journal(self) -> Journal | None:
        from ratchet.engine import JOURNAL_FILE, open_journal, state_dir

        if not (state_dir(self.root) / JOURNAL_FILE).exists():
            return None
        return open_journal(self.root)


class Task(Generic[T]):
    """Work in a background thread (a noise measurement, a run) that any thread may
    `stop`, and whose result or error `wait` returns or raises in the waiting thread."""

    def __init__(self) -> None:
        self._guard = threading.RLock()  # `stop` may come from a signal handler inside one
        self._engine: Engine | None = None
        self._stop_reason: str | None = None
        self._thread: threading.Thread | None = None
        self._result: T | None = None
        self._error: BaseException | None = None
        self.ready = threading.Event()  # the work has started (or ended)

    def attach(self, engine: Engine) -> None:
        """The engine that `stop` stops; a stop that came first reaches it now."""
        with self._guard:
            self._engine = engine
            pending = self._stop_reason
        if pending is not None:
            engine.stop(pending)

    def start(
        self, work: Callable[[], T], name: str, on_end: Callable[[], None] = lambda: None
    ) -> Task[T]:
        def target() -> None:
            try:
                self._result = work()
            except BaseException as error:  # the waiting thread raises it
                self._error = error
            finally:
                self.ready.set()
                on_end()

        # a daemon: a process that exits mid-run leaves the run as a kill would, and the
        # next start resumes it
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()
        return self

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, reason: str = "stop()") -> None:
        """Stop the work from any thread (or a signal handler); returns at once."""
        with self._guard:
            if self._stop_reason is None:
                self._stop_reason = reason
            engine = self._engine
        if engine is not None:
            engine.stop(reason)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the work to end (True) or the timeout to pass (False). Ctrl-C while
        waiting stops the work, waits for it to record what it was doing, and raises."""
        assert self._thread is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while self._thread.is_alive():
                left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._thread.join(left)
        except KeyboardInterrupt:
            self.stop("KeyboardInterrupt")
            self._thread.join()
            raise
        return True

    def wait(self, timeout: float | None = None) -> T:
        """The work's result, once it ended; raises its error, or `TimeoutError`."""
        if not self.join(timeout):
            raise TimeoutError(f"still running after {timeout:g}s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class Run:
    """One named run: reads its journal, or runs it in a background thread.

    ```
    with project.run("night-1", max_experiments=50) as run:
        for record in run:  # one ExperimentRecord per decision, as it is made
            print(record.id, record.decision, record.value, record.why)
    ```
    """

    def __init__(
        self,
        project: Project,
        name: str,
        max_experiments: int | None,
        max_time: float | None,
        parallel: int | None,
        proposer: ProposeFunction | ProposerObject | None,
        observer: Callable[[Event], None] | None,
    ) -> None:
        self.project = project
        self.name = name
        self._limits = (max_experiments, max_time)
        self._parallel = parallel
        self._proposer = proposer
        self._observer = observer
        self._task: Task[RunStopped] = Task()
        self._records: queue.Queue[Any] = queue.Queue()
        self._ended = False

    # reading ------------------------------------------------------------------------
    def experiments(self, limit: int | None = None) -> list[ExperimentRecord]:
        """The run's experiments, oldest first (the newest `limit` of them), the baseline
        included (`record.is_baseline`); those in flight have no decision yet."""
        journal = self.project._journal()
        if journal is None:
            return []
        try:
            return journal.experiments(self.name, limit=limit)
        finally:
            journal.close()

    def record(self) -> RunRecord | None:
        """The run's branch, base commit and metric; None before it first started."""
        journal = self.project._journal()
        if journal is None:
            return None
        try:
            return journal.run(self.name)
        finally:
            journal.close()

    # running ------------------------------------------------------------------------
    def start(self) -> Run:
        """Start (or resume) the run in a background thread; return once it has started.
        Raises what stops it from starting (another run holds the project, a dirty tree,
        a proposer that cannot start) in the calling thread. Starting twice is a no-op."""
        if self._task.started:
            return self
        self._task.start(self._work, f"ratchet-run-{self.name}", self._end)
        self._task.ready.wait()
        if self._task.failed:
            self._task.wait()  # raises what stopped it
        return self

    def stop(self, reason: str = "Run.stop()") -> None:
        """Ask the run to stop, from any thread (or a signal handler); returns at once.
        The experiments in flight are recorded `interrupted` (or decided, when they end
        first); then the run lock is released. `wait()` waits for that."""
        self._task.stop(reason)

    def wait(self, timeout: float | None = None) -> RunStopped:
        """Wait for the run to end; how it ended (`reason`, `incumbent`, `baseline`).
        Raises the error that ended it, or `TimeoutError` after `timeout` seconds."""
        if not self._task.started:
            raise UsageError(f"run '{self.name}' was not started; call start() first")
        return self._task.wait(timeout)

    @property
    def running(self) -> bool:
        return self._task.alive()

    def __iter__(self) -> Iterator[ExperimentRecord]:
        """Each experiment's record as it is decided (the baseline's too), until the run
        ends; then the error that ended it, if any, is raised. Starts the run if needed."""
        self.start()
        while not self._ended:
            try:
                item = self._records.get(timeout=_POLL)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                self.stop("KeyboardInterrupt")
                self._task.join()
                raise
            if item is _END:
                self._ended = True
                break
            yield item
        self._task.wait()

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Leaving the block stops a run still going (after a `break`, say) and waits for
        it; the run's own error is raised unless another one is leaving the block."""
        if self._task.alive():
            self.stop(
                "the with block ended" if kind is None else f"{kind.__name__} in the with block"
            )
        if kind is None:
            self._task.wait()
        else:
            self._task.join()

    # the background thread --------------------------------------------------------
    def _work(self) -> RunStopped:
        from ratchet.engine import Engine, open_journal, state_dir
        from ratchet.limits import Limits
        from ratchet.runs import run_lock

        spec = self.project.load_spec()
        if self._parallel is not None:
            executor = spec.executor.model_copy(update={"parallel": self._parallel})
            spec = spec.model_copy(update={"executor": executor})
        limits = Limits.of(spec, *self._limits)
        own = _own_proposer(self._proposer)
        # the lock before the journal is opened: a refused run writes nothing
        with run_lock(state_dir(self.project.root), self.name):
            journal = open_journal(self.project.root, verify=True)
            try:
                engine = Engine(self.project.root, spec, journal, self._observe, self.name,
                                limits, own)  # fmt: skip
                self._task.attach(engine)
                return engine.run()
            finally:
                journal.close()

    def _observe(self, event: Event) -> None:
        from ratchet.events import ExperimentDecided, RunStarted

        if self._observer is not None:
            self._observer(event)
        if isinstance(event, RunStarted):
            self._task.ready.set()
        elif isinstance(event, ExperimentDecided):
            self._records.put(event.record)

    def _end(self) -> None:
        self._records.put(_END)


def _own_proposer(search: ProposeFunction | ProposerObject | None) -> Proposer | None:
    if search is None:
        return None
    from ratchet.proposers.python import PythonProposer

    return PythonProposer(search)
