"""The loop: brief -> propose -> apply -> scope check -> measure -> decide -> record -> advance.

The engine alone decides, writes the journal and moves the run branch. The journal is
written before the branch moves, so a restart after `kill -9` can always bring the
branch up to the journal and mark whatever was in flight `interrupted`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pygit2

from ratchet import workspace
from ratchet.brief import History, render_brief, write_brief
from ratchet.environment import Redactor, child_environment
from ratchet.errors import RunError, UsageError, machine_failure
from ratchet.events import (
    ExperimentDecided,
    Observer,
    RunStarted,
    RunStopped,
    StageStarted,
)
from ratchet.executors import make_executor
from ratchet.journal import (
    NO_MEASUREMENT,
    ExperimentRecord,
    Journal,
    RunRecord,
    append_tsv,
    export_tsv,
)
from ratchet.judging import Judge, NoiseReport
from ratchet.limits import Limits, stop_reason
from ratchet.measure import Measurement
from ratchet.policy import policy_for
from ratchet.private import create_private, private_dir, write_private
from ratchet.proposers import Outcome, ProposalError, Proposer, ProposerContext, make_proposer
from ratchet.runs import open_run, reconcile_branch, run_lock
from ratchet.safeio import read_directive
from ratchet.sandbox import Sandbox, kill_leftover, pidfile_for
from ratchet.sandbox.select import choose_sandbox
from ratchet.scheduler import Scheduler, SignalGate, Stopped
from ratchet.scope import scope_why
from ratchet.spec import Spec
from ratchet.workspace import GitError, Slot

JOURNAL_FILE = "journal.db"
RESULTS_FILE = "results.tsv"
BASELINE_REPEATS = 3  # the baseline is measured this often: the first estimate of the noise
# what a proposer is told of the history at its start (a knobs study replays them):
# bounded, so that a resume after 100,000 experiments starts as fast as after 100
TRIALS_RECENT, TRIALS_BEST = 500, 100
MAX_REBASES = 3  # a would-be keep chasing an incumbent that keeps moving is `stale` after these


def state_dir(project: Path) -> Path:
    return project / workspace.STATE_DIR


def open_journal(project: Path, verify: bool = False) -> Journal:
    """The project's journal; `.ratchet/` is made (or tightened to) 0700 first. `verify`
    before writing to it (a run, a noise estimate)."""
    return Journal(private_dir(state_dir(project)) / JOURNAL_FILE, verify)


class Engine:
    def __init__(
        self,
        project: Path,
        spec: Spec,
        journal: Journal,
        observer: Observer = lambda event: None,
        run_name: str | None = None,
        limits: Limits | None = None,
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
        self.results = self.state / RESULTS_FILE

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
        )
        export_tsv(self.journal, self.name, self.spec.metric.name, self.results)
        incumbent = self.journal.incumbent(self.name)
        start = incumbent.commit if incumbent and incumbent.commit else run.base_commit
        self.slots = [workspace.ensure_slot(self.project, i, start) for i in range(self.parallel)]
        for index in range(self.parallel):
            # bwrap binds each brief before it is written
            create_private(self.state / f"brief-{index}.json")
        self.executor = make_executor(self.spec, self.project, self.sandbox)
        self.started = RunStarted(run, self.spec.proposer.kind, self.sandbox_note, resumed,
                                  interrupted, incumbent, recovered)  # fmt: skip
        self.session_start = time.monotonic()
        self.counts = self.journal.counts(self.name)
        self.earlier_elapsed = self.counts.elapsed  # of earlier sessions; this one's is the clock
        self.history = History.load(self.journal, self.name)
        self.judge = Judge(self.spec, self.journal, self.name, self.policy, self.executor,
                           self.sandbox, self.envs, self.redact, self._on_measure)  # fmt: skip
        self.scheduler = Scheduler()
        self.measuring: dict[int, dict[str, Any]] = {}  # proposals in flight, for the briefs
        directive = self.spec.scope.directive
        self.directive = read_directive(self.project, directive) if directive else ""
        self.signals = SignalGate()
        return run, incumbent

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
        with self.signals.installed():
            try:
                if incumbent is None:
                    # a proposer that cannot start (a CLI not installed, no knob) says so
                    # before the baseline is measured; it is made again with the baseline
                    workspace.reset_slot(self.slots[0], run.base_commit)
                    self._make_proposer(self.slots[0])
                    incumbent = self._measure_baseline(self.slots[0], run)
                    if incumbent.decision != "keep":
                        reason = f"the baseline measurement failed ({incumbent.decision}): {incumbent.why}"
                        return self._stop(reason, None)
                workspace.reset_slot(self.slots[0], self._commit(incumbent))
                self.incumbent = incumbent
                self.proposer = self._make_proposer(self.slots[0])
                self.judge.waiting = self.scheduler.waiting
                self.scheduler.run(self.parallel, self._next_experiment, self._interrupt_slots)
                reason = self.stop_reason or "stopped"
            except Stopped as stop:
                reason = f"stopped by {stop}"
            finally:
                self.executor.close()
        return self._stop(reason, self.journal.incumbent(self.name))

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

    def measure_noise(self, repeats: int) -> NoiseReport:
        """Measure the incumbent `repeats` more times, in every slot at once (in a new run,
        the baseline first)."""
        with run_lock(self.state, self.name):
            return self._measure_noise(repeats)

    def _measure_noise(self, repeats: int) -> NoiseReport:
        run, incumbent = self._prepare()
        with self.signals.installed():
            if incumbent is None:
                incumbent = self._measure_baseline(self.slots[0], run)
                if incumbent.decision != "keep":
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

            self.judge.waiting = self.scheduler.waiting
            try:
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

    def _repair(self, slot: Slot, commit: str) -> Slot:
        """Rebuild a slot that a proposal or candidate broke; later experiments use it."""
        rebuilt = workspace.ensure_slot(self.project, slot.index, commit, rebuild=True)
        self.slots[slot.index] = rebuilt
        self.journal.audit(self.name, "slot-rebuilt", slot=slot.index)
        return rebuilt

    def _stop(self, reason: str, incumbent: ExperimentRecord | None) -> RunStopped:
        self.journal.audit(self.name, "run-stopped", reason=reason)
        baseline = self.journal.baseline(self.name)
        stopped = RunStopped(reason, incumbent, baseline)
        self.observe(stopped)
        return stopped

    def _make_proposer(self, slot: Slot) -> Proposer:
        history = self.journal.trials(self.name, TRIALS_RECENT, TRIALS_BEST)
        files = workspace.tracked_files(slot.path)
        context = ProposerContext(
            self.spec, self.project, slot.path, files, history, self.proposer_sandbox, self.state
        )
        return make_proposer(context)

    def _stop_reason(self, incumbent: ExperimentRecord) -> str | None:
        return stop_reason(self.limits, self.counts, self.in_flight, self._elapsed(),
                           incumbent.value, self.spec.metric)  # fmt: skip

    @staticmethod
    def _commit(record: ExperimentRecord) -> str:
        assert record.commit is not None
        return record.commit

    # one experiment -----------------------------------------------------------------
    def _measure_baseline(self, slot: Slot, run: RunRecord) -> ExperimentRecord:
        experiment = self.journal.begin_experiment(
            self.name, slot.index, run.base_commit, "baseline"
        )
        try:
            workspace.reset_slot(slot, run.base_commit)
            self.journal.record_proposal(experiment, "baseline", "", [], {}, 0.0)
            verdict = self.judge.baseline(experiment, slot)
        except Exception as error:
            if not _candidate_fault(error):
                raise
            self._repair(slot, run.base_commit)
            why = (f"measuring the baseline broke its slot ({type(error).__name__}: {error}); "
                   "the slot was rebuilt")  # fmt: skip
            return self._decide(experiment, "crash", self.redact(why), None, None, None)
        commit = run.base_commit if verdict.decision == "keep" else None
        return self._decide(experiment, verdict.decision, verdict.why, verdict.measurement,
                            commit, None, verdict.value)  # fmt: skip

    def _on_measure(self, experiment: int, slot: int) -> None:
        budget = self.spec.metric.budget
        self.observe(StageStarted(experiment, "measuring", budget, time.time(), slot))

    def _run_experiment(self, slot: Slot, proposer: Proposer) -> ExperimentRecord:
        incumbent = self.incumbent
        parent = self._commit(incumbent)
        experiment = self.journal.begin_experiment(self.name, slot.index, parent, proposer.name)
        try:
            record = self._attempt(experiment, slot, proposer, incumbent, parent)
        except Stopped as stop:
            current = self.journal.experiment(experiment)
            if current is not None and current.decision is None:
                why = (
                    f"stopped by {stop} while the experiment was in flight; nothing of it was kept"
                )
                self._decide(experiment, "interrupted", why, None, None, self.incumbent)
            raise
        except Exception as error:  # a stage's fault: the candidate's is a decision
            record = self._fence(experiment, slot, parent, error)
        outcome = Outcome(
            record.id, record.decision or "", record.value, incumbent.value, record.meta
        )
        try:
            proposer.observe(outcome)
        except Exception as error:
            if machine_failure(error) is not None:
                raise
            # a plug-in that cannot take the news still proposes; the audit says what failed
            failure = self.redact(f"{type(error).__name__}: {error}")
            self.journal.audit(self.name, "proposer-observe-failed", experiment=record.id,
                               error=failure)  # fmt: skip
        if record.decision == "keep":
            self.incumbent = record
        else:  # its value may have moved: re-measured while this candidate was judged
            self.incumbent = self.journal.experiment(self.incumbent.id) or self.incumbent
        return record

    def _fence(
        self, experiment: int, slot: Slot, parent: str, error: Exception
    ) -> ExperimentRecord:
        """An error that escaped a stage of the experiment (proposing, judging, measuring,
        rebasing, committing). One the candidate or proposer caused (a slot it broke, a
        file it made unreadable) is the experiment's decision, and the slot is rebuilt;
        a full disk, a damaged journal or a bug of ratchet's stops the run."""
        current = self.journal.experiment(experiment)
        undecided = current is not None and current.decision is None
        if machine_failure(error) is not None:
            raise error
        if not undecided or not _candidate_fault(error):
            if undecided:  # recorded now, so that the run resumes without a repair
                why = (f"ratchet's own error stopped the run ({type(error).__name__}); "
                       "nothing of it was kept")  # fmt: skip
                self._decide(experiment, "interrupted", why, None, None, self.incumbent)
            raise error
        assert current is not None
        proposing = current.stage == "proposing"
        self._repair(slot, parent)
        what = "proposal" if proposing else "candidate"
        why = (f"the {what} broke the slot while it was {current.stage} "
               f"({type(error).__name__}: {error}); the slot was rebuilt and nothing of it "
               "was kept")  # fmt: skip
        decision = "invalid-proposal" if proposing else "crash"
        return self._decide(experiment, decision, self.redact(why), None, None, self.incumbent)

    def _attempt(
        self,
        experiment: int,
        slot: Slot,
        proposer: Proposer,
        incumbent: ExperimentRecord,
        parent: str,
    ) -> ExperimentRecord:
        try:
            workspace.reset_slot(slot, parent)
        except GitError:
            slot = self._repair(slot, parent)  # the last candidate broke it
        brief_path = self.state / f"brief-{slot.index}.json"
        write_brief(brief_path, self._brief(experiment, incumbent), self.redact)
        budget = self.spec.proposer.budget
        self.observe(StageStarted(experiment, "proposing", budget, time.time(), slot.index))
        try:
            with self.scheduler.waiting():  # other slots decide while this one proposes
                proposal = proposer.propose(slot.path, brief_path)
            change = workspace.collect_change(slot, parent, self.spec.scope)
        except ProposalError as error:
            return self._decide(experiment, "invalid-proposal", str(error), None, None, incumbent)
        except GitError as error:
            self._repair(slot, parent)
            why = f"the proposal broke the slot's git worktree ({error}); the slot was rebuilt"
            return self._decide(experiment, "invalid-proposal", why, None, None, incumbent)
        except Stopped:
            raise
        except Exception as error:  # an untrusted plug-in's bug must not end the night
            why = f"the proposer failed: {type(error).__name__}: {error}"
            return self._decide(
                experiment, "invalid-proposal", self.redact(why), None, None, incumbent
            )
        files = sorted({p for f in change.files for p in f.paths})
        self.journal.record_proposal(
            experiment,
            self.redact(proposal.rationale),
            self.redact(change.patch),
            files,
            proposal.meta,
            proposal.cost.seconds,
            proposal.cost.tokens,
            proposal.cost.usd,
            proposal.by,
        )
        if change.refused is not None:  # never staged: there is no patch to compare
            return self._decide(experiment, "out-of-scope", self.redact(change.refused), None,
                                None, incumbent)  # fmt: skip
        self.measuring[experiment] = {"id": experiment, "slot": slot.index, "files": files,
                                      "rationale": self.redact(proposal.rationale)[:500]}  # fmt: skip
        patch_hash = workspace.normalized_patch_hash(change.patch)
        self.journal.set_patch_hash(experiment, patch_hash)
        earlier = (
            None if change.empty else self.journal.same_patch(self.name, patch_hash, experiment)
        )
        if earlier is not None and earlier.decision is None:
            why = (f"the same change as experiment #{earlier.id}, which slot {earlier.slot} is "
                   "measuring now; not measured twice")  # fmt: skip
            return self._decide(experiment, "duplicate", why, None, None, incumbent)
        if earlier is not None:
            why = (f"the same change as experiment #{earlier.id} ({earlier.decision}: "
                   f"{earlier.why}); not measured again")  # fmt: skip
            return self._decide(experiment, "duplicate", why, None, None, incumbent, earlier.value)
        if change.empty:
            return self._decide(
                experiment, "no-change", "the proposal changed no file", None, None, incumbent
            )
        refusal = scope_why(change, self.spec.scope)
        if refusal is not None:
            return self._decide(experiment, "out-of-scope", refusal, None, None, incumbent)
        return self._judge(experiment, slot, proposal.rationale, incumbent, parent)

    def _judge(
        self, experiment: int, slot: Slot, rationale: str, incumbent: ExperimentRecord, parent: str
    ) -> ExperimentRecord:
        """Judge the candidate; a would-be keep whose incumbent was replaced meanwhile is
        rebased onto the new one (three-way) and judged again, or is `stale`."""
        key = str(experiment)
        for rebases in range(MAX_REBASES + 1):
            verdict = self.judge.candidate(experiment, slot, incumbent.id, parent, key)
            current = self.incumbent
            if verdict.decision != "keep" or current.id == incumbent.id:
                break
            onto = self._commit(current)
            merged = workspace.rebase_tree(slot, parent, onto, workspace.staged_tree(slot))
            if merged is None or rebases == MAX_REBASES:
                reason = (f"its change conflicts with #{current.id}'s" if merged is None else
                          f"the incumbent moved {MAX_REBASES + 1} times while it was judged")  # fmt: skip
                why = (f"stale: would keep against #{incumbent.id}, but #{current.id} was kept "
                       f"meanwhile and {reason}")  # fmt: skip
                return self._decide(experiment, "stale", why, verdict.measurement, None,
                                    current, verdict.value)  # fmt: skip
            workspace.checkout_tree(slot, merged)
            self.journal.set_parent(experiment, onto)
            self.journal.audit(self.name, "rebased", experiment=experiment, onto=current.id)
            incumbent, parent, key = current, onto, f"{experiment}:rebased-{rebases + 1}"
        if verdict.decision != "keep":
            why = verdict.why
            if self.incumbent.id != incumbent.id:  # the newer incumbent beat that one
                why += f"; #{self.incumbent.id} has been kept since"
            return self._decide(experiment, verdict.decision, why, verdict.measurement,
                                None, self.incumbent, verdict.value)  # fmt: skip
        latest = self.journal.experiment(incumbent.id)
        old = latest.value if latest and latest.value is not None else incumbent.value
        assert old is not None and verdict.value is not None
        message = workspace.commit_message(rationale, self.spec.metric.name, old, verdict.value,
                                  experiment, self.name)  # fmt: skip
        commit = workspace.commit_candidate(slot, parent, self.redact(message))
        record = self._decide(experiment, "keep", verdict.why, verdict.measurement, commit,
                              incumbent, verdict.value)  # fmt: skip
        workspace.advance_branch(self.project, self.name, commit, parent)  # journal first
        return record

    def _decide(
        self,
        experiment: int,
        decision: str,
        why: str,
        measurement: Measurement | None,
        commit: str | None,
        incumbent: ExperimentRecord | None,
        value: float | None = None,
    ) -> ExperimentRecord:
        if value is None and measurement is not None:
            value = measurement.value
        metrics = measurement.metrics if measurement is not None else {}
        duration = measurement.duration if measurement is not None else None
        self.journal.decide(experiment, decision, why, value, metrics, commit, duration)
        self.measuring.pop(experiment, None)
        self.journal.audit(self.name, "decided", experiment=experiment, decision=decision,
                           why=why, commit=commit)  # fmt: skip
        record = self.journal.experiment(experiment)
        assert record is not None
        self._count(record)
        self.history.add(record, measurement.output if measurement is not None else "")
        append_tsv(record, self.results)
        self.observe(
            ExperimentDecided(record, record if decision == "keep" else incumbent or record)
        )
        return record

    def _count(self, record: ExperimentRecord) -> None:
        counted = record.proposer != "baseline" and record.decision != "interrupted"
        keep = counted and record.decision == "keep"
        self.counts = replace(
            self.counts,
            experiments=self.counts.experiments + counted,
            keeps=self.counts.keeps + keep,
            since_keep=0 if record.decision == "keep" else self.counts.since_keep + counted,
            failing=self.counts.failing + 1
            if record.decision in NO_MEASUREMENT
            else self.counts.failing * (record.decision == "interrupted"),
            cost_usd=self.counts.cost_usd + record.cost_usd,
        )

    def _elapsed(self) -> float:
        """Wall time: this session's, plus the time earlier ones spent in experiments."""
        return self.earlier_elapsed + (time.monotonic() - self.session_start)

    def _brief(self, experiment: int, incumbent: ExperimentRecord) -> str:
        limits, counts = self.limits, self.counts
        elapsed = self._elapsed()
        budget_left: dict[str, float | int | None] = {
            "experiments": None
            if limits.max_experiments is None
            else limits.max_experiments - counts.experiments,
            "seconds": None if limits.max_time is None else max(0.0, limits.max_time - elapsed),
        }
        totals = {"experiments": counts.experiments, "keeps": counts.keeps}
        return render_brief(
            self.spec,
            self.history,
            self.name,
            experiment,
            incumbent,
            self.directive,
            budget_left,
            totals,
            {"sd": self.judge.noise.estimate.sd, "df": self.judge.noise.estimate.df},
            list(self.measuring.values()),
        )


def _candidate_fault(error: BaseException) -> bool:
    """Errors a candidate or proposer can cause by what it does to its slot: git that
    fails on what it left, files it made unreadable or undecodable. Anything else that
    escapes a stage is a bug of ratchet's. A full disk is neither: the machine's."""
    faults = (GitError, pygit2.GitError, OSError, UnicodeError)
    return isinstance(error, faults) and machine_failure(error) is None


def _slot_count(project: Path) -> int:
    """How many slot worktrees an earlier session left: their orphans are killed too."""
    slots = project / workspace.SLOTS_DIR
    return sum(1 for path in slots.iterdir() if path.name.isdigit()) if slots.is_dir() else 0
