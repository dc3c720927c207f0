"""One experiment's stages, in order: brief -> propose -> apply -> scope check -> measure
-> decide -> record -> advance; and the baseline's.

A slot's thread runs them while it holds the run's decision (see scheduler.py). Each
stage's fault that a candidate or proposer caused is the experiment's decision; the run's
life around them (starting, resuming, stopping) is the engine's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pygit2

from ratchet import workspace
from ratchet.brief import History, render_brief, write_brief
from ratchet.decisions import NO_MEASUREMENT, Decision
from ratchet.environment import Redactor
from ratchet.errors import machine_failure
from ratchet.events import ExperimentDecided, Observer, StageStarted
from ratchet.journal import Journal, RunCounts
from ratchet.journalrecords import ExperimentRecord, RunRecord
from ratchet.judging import Judge
from ratchet.limits import Limits
from ratchet.measure import Measurement
from ratchet.proposers import Outcome, ProposalError, Proposer
from ratchet.results import append_tsv
from ratchet.scheduler import Scheduler, Stopped
from ratchet.scope import scope_why
from ratchet.specmodel import Spec
from ratchet.workspace import GitError, Slot

MAX_REBASES = 3  # a would-be keep chasing an incumbent that keeps moving is `stale` after these


class ExperimentStages:
    """The stages of one experiment; the engine holds the state they share."""

    project: Path
    spec: Spec
    journal: Journal
    observe: Observer
    name: str
    limits: Limits
    state: Path
    redact: Redactor
    results: Path
    slots: list[Slot]
    judge: Judge
    scheduler: Scheduler
    incumbent: ExperimentRecord
    counts: RunCounts
    history: History
    measuring: dict[int, dict[str, Any]]
    directive: str
    session_start: float
    earlier_elapsed: float

    def _repair(self, slot: Slot, commit: str) -> Slot:
        """Rebuild a slot that a proposal or candidate broke; later experiments use it."""
        rebuilt = workspace.ensure_slot(self.project, slot.index, commit, rebuild=True)
        self.slots[slot.index] = rebuilt
        self.journal.audit(self.name, "slot-rebuilt", slot=slot.index)
        return rebuilt

    @staticmethod
    def _commit(record: ExperimentRecord) -> str:
        assert record.commit is not None
        return record.commit

    def _measure_baseline(self, slot: Slot, run: RunRecord) -> ExperimentRecord:
        experiment = self.journal.begin_experiment(
            self.name, slot.index, run.base_commit, "baseline"
        )
        try:
            workspace.reset_slot(slot, run.base_commit)
            self.journal.record_proposal(experiment, "baseline", "", [], {}, 0.0)
            verdict = self.judge.baseline(experiment, slot)
        except Stopped as stop:
            why = f"stopped by {stop} while the baseline was measured; measured again at the next start"
            self._decide(experiment, Decision.INTERRUPTED, why, None, None, None)
            raise
        except Exception as error:
            if not _candidate_fault(error):
                raise
            self._repair(slot, run.base_commit)
            why = (f"measuring the baseline broke its slot ({type(error).__name__}: {error}); "
                   "the slot was rebuilt")  # fmt: skip
            return self._decide(experiment, Decision.CRASH, self.redact(why), None, None, None)
        commit = run.base_commit if verdict.decision == Decision.KEEP else None
        return self._decide(experiment, Decision(verdict.decision), verdict.why, verdict.measurement,
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
                self._decide(experiment, Decision.INTERRUPTED, why, None, None, self.incumbent)
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
                self._decide(experiment, Decision.INTERRUPTED, why, None, None, self.incumbent)
            raise error
        assert current is not None
        proposing = current.stage == "proposing"
        self._repair(slot, parent)
        what = "proposal" if proposing else "candidate"
        why = (f"the {what} broke the slot while it was {current.stage} "
               f"({type(error).__name__}: {error}); the slot was rebuilt and nothing of it "
               "was kept")  # fmt: skip
        decision = Decision.INVALID_PROPOSAL if proposing else Decision.CRASH
        return self._decide(experiment, decision, self.redact(why), None, None, self.incumbent)

    def _attempt(
        self,
        experiment: int,
        slot: Slot,
        proposer: Proposer,
        incumbent: ExperimentRecord,
        parent: str,
    ) -> ExperimentRecord:
        from ratchet.suite.judge import SuiteJudge, drop_traces

        harness = isinstance(self.judge, SuiteJudge)
        try:
            if harness:
                drop_traces(slot.path)  # one a killed ratchet left behind
            workspace.reset_slot(slot, parent)
        except (GitError, OSError):
            slot = self._repair(slot, parent)  # the last candidate broke it
        brief_path = self.state / f"brief-{slot.index}.json"
        # harness mode: the incumbent's search failures, and its traces in the worktree
        suite = (
            self.judge.brief_section(incumbent.id, slot.path)
            if isinstance(self.judge, SuiteJudge)
            else None
        )
        write_brief(brief_path, self._brief(experiment, incumbent, suite), self.redact)
        budget = self.spec.proposer.budget
        self.observe(StageStarted(experiment, "proposing", budget, time.time(), slot.index))
        try:
            with self.scheduler.waiting():  # other slots decide while this one proposes
                try:
                    proposal = proposer.propose(slot.path, brief_path)
                finally:
                    if harness:  # never part of the change
                        drop_traces(slot.path)
            change = workspace.collect_change(slot, parent, self.spec.scope)
        except ProposalError as error:
            return self._decide(
                experiment, Decision.INVALID_PROPOSAL, str(error), None, None, incumbent
            )
        except GitError as error:
            self._repair(slot, parent)
            why = f"the proposal broke the slot's git worktree ({error}); the slot was rebuilt"
            return self._decide(experiment, Decision.INVALID_PROPOSAL, why, None, None, incumbent)
        except Stopped:
            raise
        except Exception as error:  # an untrusted plug-in's bug must not end the night
            why = f"the proposer failed: {type(error).__name__}: {error}"
            return self._decide(
                experiment, Decision.INVALID_PROPOSAL, self.redact(why), None, None, incumbent
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
            return self._decide(experiment, Decision.OUT_OF_SCOPE, self.redact(change.refused), None,
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
            return self._decide(experiment, Decision.DUPLICATE, why, None, None, incumbent)
        if earlier is not None:
            why = (f"the same change as experiment #{earlier.id} ({earlier.decision}: "
                   f"{earlier.why}); not measured again")  # fmt: skip
            return self._decide(
                experiment, Decision.DUPLICATE, why, None, None, incumbent, earlier.value
            )
        if change.empty:
            return self._decide(
                experiment,
                Decision.NO_CHANGE,
                "the proposal changed no file",
                None,
                None,
                incumbent,
            )
        refusal = scope_why(change, self.spec.scope)
        if refusal is not None:
            return self._decide(experiment, Decision.OUT_OF_SCOPE, refusal, None, None, incumbent)
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
                return self._decide(experiment, Decision.STALE, why, verdict.measurement, None,
                                    current, verdict.value)  # fmt: skip
            workspace.checkout_tree(slot, merged)
            self.journal.set_parent(experiment, onto)
            self.journal.audit(self.name, "rebased", experiment=experiment, onto=current.id)
            incumbent, parent, key = current, onto, f"{experiment}:rebased-{rebases + 1}"
        if verdict.decision != "keep":
            why = verdict.why
            if self.incumbent.id != incumbent.id:  # the newer incumbent beat that one
                why += f"; #{self.incumbent.id} has been kept since"
            return self._decide(experiment, Decision(verdict.decision), why, verdict.measurement,
                                None, self.incumbent, verdict.value)  # fmt: skip
        latest = self.journal.experiment(incumbent.id)
        old = latest.value if latest and latest.value is not None else incumbent.value
        assert old is not None and verdict.value is not None
        message = workspace.commit_message(rationale, self.spec.metric.name, old, verdict.value,
                                  experiment, self.name)  # fmt: skip
        commit = workspace.commit_candidate(slot, parent, self.redact(message))
        record = self._decide(experiment, Decision.KEEP, verdict.why, verdict.measurement, commit,
                              incumbent, verdict.value)  # fmt: skip
        workspace.advance_branch(self.project, self.name, commit, parent)  # journal first
        return record

    def _decide(
        self,
        experiment: int,
        decision: Decision,
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
        append_tsv(record, self.results, self.spec.run.results_format)
        self.observe(
            ExperimentDecided(record, record if decision == "keep" else incumbent or record)
        )
        return record

    def _count(self, record: ExperimentRecord) -> None:
        counted = not record.is_baseline and record.decision != Decision.INTERRUPTED
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

    def _brief(
        self, experiment: int, incumbent: ExperimentRecord, suite: dict[str, Any] | None = None
    ) -> str:
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
            suite,
        )


def _candidate_fault(error: BaseException) -> bool:
    """Errors a candidate or proposer can cause by what it does to its slot: git that
    fails on what it left, files it made unreadable or undecodable. Anything else that
    escapes a stage is a bug of ratchet's. A full disk is neither: the machine's."""
    faults = (GitError, pygit2.GitError, OSError, UnicodeError)
    return isinstance(error, faults) and machine_failure(error) is None
