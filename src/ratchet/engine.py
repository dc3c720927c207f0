"""The loop: brief -> propose -> apply -> scope check -> measure -> decide -> record -> advance.

The engine alone decides, writes the journal and moves the run branch. The journal is
written before the branch moves, so a restart after `kill -9` can always bring the
branch up to the journal and mark whatever was in flight `interrupted`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from ratchet import workspace
from ratchet.brief import History
from ratchet.decisions import Decision
from ratchet.environment import Redactor, child_environment
from ratchet.errors import RunError, UsageError, machine_failure
from ratchet.events import Observer, RunStarted, RunStopped
from ratchet.executors import make_executor
from ratchet.journal import ExperimentRecord, Journal, RunRecord
from ratchet.judging import Judge, NoiseReport
from ratchet.limits import Limits, stop_reason
from ratchet.policy import policy_for
from ratchet.private import create_private, private_dir, write_private
from ratchet.proposers import Proposer, ProposerContext, make_proposer
from ratchet.results import export_tsv
from ratchet.runs import open_run, reconcile_branch, run_lock
from ratchet.safeio import read_directive
from ratchet.sandbox import Sandbox, kill_leftover, pidfile_for
from ratchet.sandbox.select import choose_sandbox
from ratchet.scheduler import Scheduler, Stopped
from ratchet.spec import Spec
from ratchet.stages import ExperimentStages
from ratchet.workspace import GitError, Slot

JOURNAL_FILE = "journal.db"
RESULTS_FILE = "results.tsv"
BASELINE_REPEATS = 3  # the baseline is measured this often: the first estimate of the noise
# what a proposer is told of the history at its start (a knobs study replays them):
# bounded, so that a resume after 100,000 experiments starts as fast as after 100
TRIALS_RECENT, TRIALS_BEST = 500, 100


def state_dir(project: Path) -> Path:
    return project / workspace.STATE_DIR


def open_journal(project: Path, verify: bool = False) -> Journal:
    """The project's journal; `.ratchet/` is made (or tightened to) 0700 first. `verify`
    before writing to it (a run, a noise estimate)."""
    return Journal(private_dir(state_dir(project)) / JOURNAL_FILE, verify)


class Engine(ExperimentStages):
    """A run's life: start or resume it, run its slots until a limit or `stop`, stop it.

    It installs no signal handler (the command line does, and calls `stop`), so it runs
    in any thread."""

    def __init__(
        self,
        project: Path,
        spec: Spec,
        journal: Journal,
        observer: Observer = lambda event: None,
        run_name: str | None = None,
        limits: Limits | None = None,
        proposer: Proposer | None = None,
    ) -> None:
        self.project = project
        self.spec = spec
        self.journal = journal
        self.observe = observer
        self.name = run_name or spec.run.name
        self.limits = limits or Limits.of(spec)
        self.state = state_dir(project)
        self.redact = Redactor()
        self.sandbox, self.sandbox_note = self._choose_sandbox(spec.sandbox.network, [])
        if spec.executor.kind == "ray":  # measurements run on the workers' process layer
            self.sandbox_note = f"Ray workers, process layer (here: {self.sandbox_note})"
        self.parallel = spec.executor.parallel
        self.in_flight = 0  # experiments started and not yet decided
        self.stop_reason: str | None = None
        # the proposer reads its brief, which lives outside the worktree
        briefs = [self.state / f"brief-{i}.json" for i in range(self.parallel)]
        self.proposer_sandbox, _ = self._choose_sandbox(spec.proposer.network_allowed, briefs)
        self.policy = policy_for(
            spec.policy.kind,
            spec.policy.confidence,
            spec.policy.min_delta,
            spec.policy.max_repeats,
        )
        env = child_environment(allow=spec.sandbox.allow_env)
        gpus = spec.executor.gpus
        self.envs = [  # a slot of its own GPU: measurements on one never share it
            {**env, "CUDA_VISIBLE_DEVICES": str(gpus[i % len(gpus)])} if gpus else env
            for i in range(self.parallel)
        ]
        self.results = project / spec.run.results  # [run] results
        self.own_proposer = proposer  # a Python proposer, instead of the spec's
        self.scheduler = Scheduler()  # before the run starts: `stop` may come at any time

    def stop(self, reason: str = "stop()") -> None:
        """Stop the run from any thread (or a signal handler): the experiments in flight
        are recorded (`interrupted`, or decided when they finish first), then `run`
        returns. A stop before the loop starts stops it before its first experiment."""
        self.scheduler.stop(reason)

    # the loop -----------------------------------------------------------------------
    def _choose_sandbox(self, network: bool, extra: list[Path]) -> tuple[Sandbox, str]:
        box = self.spec.sandbox
        expose = [Path(p).expanduser() for p in box.expose] + extra
        return choose_sandbox(box.kind, self.spec.scope.protected, network, box.image,
                              cpus=box.cpus, memory=box.memory, pids=box.pids, gpus=box.gpus,
                              expose=expose)  # fmt: skip

    def _prepare(self) -> tuple[RunRecord, ExperimentRecord | None]:
        """Open the run, repair what a crash left, and ready the slot and the judge.
        The caller holds the run lock: no other ratchet run is alive."""
        recovered = self._remove_stale_git_locks()
        run, resumed = open_run(self.project, self.spec, self.journal, self.name)
        write_private(self.state / ".gitignore", "*\n")  # ratchet's state is never tracked
        for index in range(max(self.parallel, _slot_count(self.project))):
            if kill_leftover(pidfile_for(self.project / workspace.SLOTS_DIR / str(index))):
                self.journal.audit(self.name, "orphan-killed", slot=index)
        interrupted = self.journal.interrupt_unfinished(self.name)
        if interrupted:
            self.journal.audit(self.name, "interrupted-marked", experiments=interrupted)
        reconcile_branch(self.project, self.journal, run)
        self.journal.audit(
            self.name,
            "run-started",
            spec_digest=self.spec.digest(),
            resumed=resumed,
            limits=self.limits.__dict__,
            sandbox=self.sandbox_note,
            **({"pairing": self._proposer_label()} if self.spec.suite else {}),
        )
        export_tsv(self.journal, self.name, self.spec.metric.name, self.results,
                   fmt=self.spec.run.results_format,
                   outside_state=not self.results.is_relative_to(self.state))  # fmt: skip
        incumbent = self.journal.incumbent(self.name)
        start = incumbent.commit if incumbent and incumbent.commit else run.base_commit
        self.slots = [workspace.ensure_slot(self.project, i, start) for i in range(self.parallel)]
        for index in range(self.parallel):
            # bwrap binds each brief before it is written
            create_private(self.state / f"brief-{index}.json")
        self.executor = make_executor(self.spec, self.project, self.sandbox)
        self.started = RunStarted(run, self._proposer_label(), self.sandbox_note, resumed,
                                  interrupted, incumbent, recovered)  # fmt: skip
        self.session_start = time.monotonic()
        self.counts = self.journal.counts(self.name)
        self.earlier_elapsed = self.counts.elapsed  # of earlier sessions; this one's is the clock
        self.history = History.load(self.journal, self.name)
        judge_type: type[Judge] = Judge
        if self.spec.suite is not None:  # harness mode: trials of a suite are the measurement
            from ratchet.suite.judge import SuiteJudge

            judge_type = SuiteJudge
        self.judge = judge_type(self.spec, self.journal, self.name, self.policy, self.executor,
                                self.sandbox, self.envs, self.redact, self._on_measure)  # fmt: skip
        self.judge.waiting = self.scheduler.waiting
        self.measuring: dict[int, dict[str, Any]] = {}  # proposals in flight, for the briefs
        directive = self.spec.scope.directive
        self.directive = read_directive(self.project, directive) if directive else ""
        return run, incumbent

    def _proposer_label(self) -> str:
        """The proposer's kind; in harness mode, its pairing with the task agent's model."""
        if self.spec.suite is None:
            return self.spec.proposer.kind
        from ratchet.suite.judge import describe_pairing

        return describe_pairing(self.spec)

    def _remove_stale_git_locks(self) -> tuple[str, ...]:
        """Git lock files a killed ratchet's git children left; the run lock held proves
        their owners dead. Each one removed is named in the audit and the output."""
        removed = []
        for path in workspace.stale_git_locks(self.project, self.name):
            path.unlink(missing_ok=True)
            shown = os.path.relpath(path, self.project)
            self.journal.audit(self.name, "stale-lock-removed", file=shown)
            removed.append(shown)
        return tuple(removed)

    def run(self) -> RunStopped:
        """The loop, until a limit or a signal stops it; one run at a time per project."""
        with run_lock(self.state, self.name):
            try:
                return self._run()
            except Exception as error:
                own_bug = not isinstance(error, (RunError, UsageError, GitError))
                if own_bug and machine_failure(error) is None:  # say so in the audit too
                    reason = f"an internal error: {type(error).__name__}: {error}"
                    with contextlib.suppress(sqlite3.Error):  # the first error is the news
                        self.journal.audit(self.name, "run-stopped", reason=self.redact(reason))
                raise

    def _run(self) -> RunStopped:
        run, incumbent = self._prepare()
        self.observe(self.started)
        reason = "stopped"
        try:
            if incumbent is None:
                # a proposer that cannot start (a CLI not installed, no knob) says so
                # before the baseline is measured; it is made again with the baseline
                workspace.reset_slot(self.slots[0], run.base_commit)
                self._make_proposer(self.slots[0])
                incumbent = self._baseline(run)
                if incumbent.decision != Decision.KEEP:
                    reason = (
                        f"the baseline measurement failed ({incumbent.decision}): {incumbent.why}"
                    )
                    return self._stop(reason, None)
            workspace.reset_slot(self.slots[0], self._commit(incumbent))
            self.incumbent = incumbent
            self.proposer = self._make_proposer(self.slots[0])
            self.scheduler.run(self.parallel, self._next_experiment, self._interrupt_slots)
            reason = self.stop_reason or "stopped"
        except Stopped as stop:
            reason = f"stopped by {stop}"
        finally:
            self.executor.close()
        return self._stop(reason, self.journal.incumbent(self.name))

    def _baseline(self, run: RunRecord) -> ExperimentRecord:
        """Measure the baseline in slot 0's thread, as the scheduler runs any experiment,
        so that a stop reaches it the same way."""
        measured: list[ExperimentRecord] = []

        def measure_once(index: int) -> bool:
            measured.append(self._measure_baseline(self.slots[index], run))
            return False

        self.scheduler.run(1, measure_once, self._interrupt_slots)
        return measured[0]

    def _next_experiment(self, index: int) -> bool:
        """Run one experiment in slot `index`, unless the run should stop (lock held)."""
        if self.stop_reason is None:
            self.stop_reason = self._stop_reason(self.incumbent)
        if self.stop_reason is not None:
            return False
        self.in_flight += 1
        try:
            self._run_experiment(self.slots[index], self.proposer)
        finally:
            self.in_flight -= 1
        return True

    def _interrupt_slots(self) -> None:
        """Kill what every slot waits for, so that each can record its experiment."""
        for slot in self.slots:
            kill_leftover(pidfile_for(slot.path))
        self.executor.interrupt()
        # an llm proposal waiting out its endpoint's back-off; no import in a signal
        # handler: where the module was never imported, no proposal waits on it
        providers = sys.modules.get("ratchet.proposers.providers")
        if providers is not None:
            providers.BACKOFF.interrupt()
        if hasattr(self, "judge"):  # a suite's trials run outside the slots' groups
            self.judge.interrupt()

    def measure_noise(self, repeats: int) -> NoiseReport:
        """Measure the incumbent `repeats` more times, in every slot at once (in a new run,
        the baseline first)."""
        with run_lock(self.state, self.name):
            return self._measure_noise(repeats)

    def _measure_noise(self, repeats: int) -> NoiseReport:
        run, incumbent = self._prepare()
        try:
            if incumbent is None:
                incumbent = self._baseline(run)
                if incumbent.decision != Decision.KEEP:
                    raise RunError(f"the baseline measurement failed: {incumbent.why}")
                repeats = max(0, repeats - self.spec.policy.baseline_repeats)
            commit, key = self._commit(incumbent), str(incumbent.id)
            for slot in self.slots:
                workspace.reset_slot(slot, commit)
            left, failed = [repeats], list[str]()

            def measure_once(index: int) -> bool:
                if left[0] <= 0 or failed:
                    return False
                left[0] -= 1
                measurement = self.judge.measure(incumbent.id, self.slots[index], commit)
                if not measurement.ok or measurement.value is None:
                    failed.append(measurement.why)
                    return False
                self.judge.add(key, measurement)
                return True

            self.scheduler.run(self.parallel, measure_once, self._interrupt_slots)
        except Stopped as stop:
            raise RunError(
                f"stopped by {stop}; the measurements taken are in the journal"
            ) from None
        finally:
            self.executor.close()
        if failed:
            raise RunError(f"a measurement of the incumbent failed: {failed[0]}")
        report = self.judge.noise_report(incumbent.id)
        self.journal.update_value(incumbent.id, report.mean)
        self.journal.audit(self.name, "noise-estimated", **report.__dict__)
        return report

    def _stop(self, reason: str, incumbent: ExperimentRecord | None) -> RunStopped:
        self.journal.audit(self.name, "run-stopped", reason=reason)
        baseline = self.journal.baseline(self.name)
        stopped = RunStopped(reason, incumbent, baseline)
        self.observe(stopped)
        return stopped

    def _make_proposer(self, slot: Slot) -> Proposer:
        if self.own_proposer is not None:
            return self.own_proposer
        history = self.journal.trials(self.name, TRIALS_RECENT, TRIALS_BEST)
        files = workspace.tracked_files(slot.path)
        context = ProposerContext(
            self.spec, self.project, slot.path, files, history, self.proposer_sandbox, self.state
        )
        return make_proposer(context)

    def _stop_reason(self, incumbent: ExperimentRecord) -> str | None:
        return stop_reason(self.limits, self.counts, self.in_flight, self._elapsed(),
                           incumbent.value, self.spec.metric)  # fmt: skip


def _slot_count(project: Path) -> int:
    """How many slot worktrees an earlier session left: their orphans are killed too."""
    slots = project / workspace.SLOTS_DIR
    return sum(1 for path in slots.iterdir() if path.name.isdigit()) if slots.is_dir() else 0
