"""Judging a candidate harness on the suite: trials, paired per-task decisions, the
sealed holdout.

The engine calls it as it calls `Judge` (`baseline`, `candidate`); only the measuring
differs. A candidate runs every search task `attempts` times; each of its trials is
paired with the incumbent's trial of the same task and attempt (run now when the journal
has none), and `paired.step` keeps, discards, or asks for fresh trials of the tasks that
decide. A would-be keep then runs the holdout, and so does the incumbent when the
journal has no holdout trials of it: a keep whose holdout mean falls is `overfit`.

What a proposer may learn of a judging is the search split's: the measurement's output
(which the brief's history shows) names search tasks only, and holdout trials' folders
lie where no proposer's sandbox, brief or tool reaches (see store.py).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pygit2

from ratchet import workspace
from ratchet.brief import suite_section
from ratchet.errors import UsageError
from ratchet.integrity import compare_digests, digest_protected
from ratchet.judging import Judge, Verdict
from ratchet.measure import Measurement, Status
from ratchet.policy import Greedy
from ratchet.sandbox import kill_leftover
from ratchet.spec import Spec, matches
from ratchet.suite import paired
from ratchet.suite.runners import RunnerContext, TrialRequest, make_runner
from ratchet.suite.store import TrialRow, TrialStore, trial_folder
from ratchet.suite.tasks import Split, Task, check_sealed, load_suite
from ratchet.suite.traces import SealedTrial, materialize_traces, open_trial
from ratchet.suite.trials import TrialResult, TrialStatus, TrialUsage
from ratchet.workspace import Slot

MAX_LOOKS = 3  # rounds of trials one candidate may take (see paired.py)
SCRATCH = "work"  # under .ratchet/: trials' workspaces while they run
# In the proposer's worktree while it proposes, so that every proposer sandbox (process,
# bwrap, docker) can read it at a path the brief names; removed before the change is
# collected, so it is never part of a proposal. Only search trials are copied there.
TRACES_DIR = ".ratchet-traces"


def drop_traces(worktree: Path) -> None:
    """Remove the read-only traces folder a proposal was given, if there is one."""
    dest = worktree / TRACES_DIR
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        for path in [dest, *dest.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(dest)


def harness_size(repo: pygit2.Repository, tree: str, editable: list[str]) -> tuple[int, int]:
    """Lines and bytes of the scope's files in `tree` (a tree or commit id)."""
    root = repo[pygit2.Oid(hex=tree)].peel(pygit2.Tree)
    lines = size = 0
    stack: list[tuple[pygit2.Tree, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder:
            path = prefix + str(entry.name)
            if entry.type_str == "tree":
                stack.append((repo[entry.id].peel(pygit2.Tree), path + "/"))
            elif entry.type_str == "blob" and matches(path, editable):
                data = repo[entry.id].read_raw()
                size += len(data)
                lines += data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
    return lines, size


def describe_pairing(spec: Spec) -> str:
    """The meta proposer and the task agent, for the run's header, audit and status."""
    assert spec.suite is not None
    proposer = spec.proposer
    meta = proposer.model or "its own model"
    task = spec.suite.model or "unnamed"
    if proposer.kind == "portfolio":
        meta = "a portfolio"
    same = proposer.model is not None and proposer.model == spec.suite.model
    pairing = "same model" if same else "different models"
    return f"{proposer.kind} {meta}, task agent {task} ({pairing})"


class SuiteJudge(Judge):
    """`Judge` for harness mode; see the module docstring."""

    def _set_up(self) -> None:
        spec, journal, run, policy = self.spec, self.journal, self.run, self.policy
        assert spec.suite is not None
        self.settings = spec.suite
        self.state = journal.path.parent  # .ratchet/
        project = self.state.parent
        self.suite = load_suite(project, spec.suite)
        check_sealed(self.suite, workspace.tracked_files(project), project)
        self.store = TrialStore(journal)
        scratch = self.state / SCRATCH / run
        for pidfile in scratch.glob("trial-*/*.pid"):  # trials a killed ratchet left running
            kill_leftover(pidfile)
        shutil.rmtree(scratch, ignore_errors=True)
        context = RunnerContext(spec, project, self.sandbox, scratch)
        self.runner = make_runner(context)
        self.alpha = 1 - spec.policy.confidence
        self.looks = 1 if isinstance(policy, Greedy) else min(MAX_LOOKS, spec.policy.max_repeats)

    def interrupt(self) -> None:
        self.runner.interrupt()

    def brief_section(self, incumbent: int, worktree: Path) -> dict[str, Any]:
        """The brief's harness-mode part: the incumbent's failures on the search split,
        and its search trials as a read-only `traces/` folder in the proposer's worktree
        (what `list_trials` and `read_trace` read). Holdout trials are never looked up."""
        trials: list[tuple[TrialResult, Path]] = []
        for row in self.store.latest(incumbent, Split.SEARCH).values():
            with contextlib.suppress(SealedTrial):  # a folder gone or unmarked: left out
                trials.append((open_trial(row.folder), row.folder))
        dest = worktree / TRACES_DIR
        try:
            drop_traces(worktree)
            materialize_traces(trials, dest)
        except OSError:  # the brief still carries the failures; the tools get no folder
            return suite_section(trials, None)
        return suite_section(trials, dest)

    def measure(self, experiment: int, slot: Slot, tree: str, key: str | None = None,
                k: int | None = None, status: str | None = None) -> Measurement:  # fmt: skip
        raise UsageError(
            "`ratchet noise` measures a metric command; in harness mode the paired per-task "
            "test needs no noise estimate"
        )

    # trials -------------------------------------------------------------------------
    def _value(self, trial: TrialResult | TrialRow) -> float:
        """A deciding trial's number under the metric: its reward, or 1 if it passed."""
        if self.spec.metric.name == "passed":
            return 1.0 if trial.status == TrialStatus.PASSED else 0.0
        assert trial.reward is not None
        return trial.reward

    def _run(
        self,
        experiment: int,
        judged: int,
        slot: Slot,
        tasks: Sequence[Task],
        attempts: Sequence[int],
        split: Split,
    ) -> list[TrialResult]:
        """Run the tree checked out in `slot` on `tasks` x `attempts`; record the trials and
        charge their cost to the experiment being judged."""
        requests = [
            TrialRequest(
                task,
                attempt,
                trial_folder(self.state, self.run, split, experiment, task.name, attempt),
            )
            for task in tasks
            for attempt in attempts
        ]
        if not requests:
            return []
        self.on_measure(judged, slot.index)
        spend_left = getattr(self.runner, "spend_left", None)
        if spend_left is not None:  # the metered task agents' cap: what max_cost_usd leaves
            spend_left(self._cost_left())
        with self.waiting():  # other slots decide while these trials run
            results = self.runner.run_trials(requests, slot.path)
        folders = {(r.task.name, r.attempt): r.folder for r in requests}
        self.store.record(self.run, experiment, judged, split,
                          [(t, folders[(t.task, t.attempt)]) for t in results])  # fmt: skip
        total = sum(t.usage.cost_usd for t in results)
        self.store.charge(judged, TrialUsage(cost_usd=total))
        return results

    def _cost_left(self) -> float | None:
        cap = self.spec.run.max_cost_usd
        if cap is None:
            return None
        row = self.journal.db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM experiments WHERE run = ?", (self.run,)
        ).fetchone()
        return max(0.0, cap - float(row[0]))

    def _summary(
        self, results: Sequence[TrialResult | TrialRow], label: str
    ) -> tuple[str, dict[str, float]]:
        """Lines on the search trials (what the brief's history may show) and metrics."""
        deciding = [t for t in results if t.status in (TrialStatus.PASSED, TrialStatus.FAILED)]
        passed = sum(t.status == TrialStatus.PASSED for t in results)
        errors = sum(t.status == TrialStatus.ERROR for t in results)
        timeouts = sum(t.status == TrialStatus.TIMEOUT for t in results)
        reward = sum(t.reward or 0.0 for t in deciding) / len(deciding) if deciding else 0.0
        lines = [f"{label}: {len(results)} trials, {passed} passed, "
                 f"{len(deciding) - passed} failed, {errors} errors, {timeouts} timeouts"]  # fmt: skip
        for t in results:
            shown = f"{t.reward:.3g}" if t.reward is not None else "-"
            note = f": {t.error}" if t.error else ""
            lines.append(f"  {t.task} #{t.attempt} {t.status.value} reward {shown}{note}")
        metrics = {"reward": reward, "passed": passed / len(deciding) if deciding else 0.0,
                   "trials": float(len(results)), "trial_errors": float(errors),
                   "trial_timeouts": float(timeouts)}  # fmt: skip
        return "\n".join(lines), metrics

    def _measurement(
        self, experiment: int, results: Sequence[TrialResult], started: float, why: str = ""
    ) -> Measurement:
        output, metrics = self._summary(results, "search split")
        deciding = [t for t in results if t.status in (TrialStatus.PASSED, TrialStatus.FAILED)]
        if not deciding:
            timed_out = any(t.status == TrialStatus.TIMEOUT for t in results)
            status: Status = "timeout" if timed_out else "crash"
            first = next((t.error for t in results if t.error), "no trial ran")
            why = why or (f"no trial of the search split produced a reward ({len(results)} "
                          f"errors or timeouts); the first: {first}")  # fmt: skip
            m = Measurement(status, None, metrics, time.time() - started, output, why, 0, started)
        else:  # the first look's trials: later looks re-ran only the tasks that decide
            looked = [t for t in deciding if t.attempt < self.settings.attempts] or deciding
            value = sum(self._value(t) for t in looked) / len(looked)
            metrics[self.spec.metric.name] = value
            m = Measurement("ok", value, metrics, time.time() - started, output, why, 0, started)
        self.journal.add_measurement(experiment, 0, m.status, m.value, m.metrics, m.duration,
                                     m.output, m.started_at)  # fmt: skip
        return m

    # the engine's calls ---------------------------------------------------------------
    def baseline(self, experiment: int, slot: Slot) -> Verdict:
        started = time.time()
        attempts = range(self.settings.attempts)
        results = self._run(
            experiment, experiment, slot, self.suite.split(Split.SEARCH), attempts, Split.SEARCH
        )
        m = self._measurement(experiment, results, started)
        if not m.ok:
            return Verdict(m.status, f"baseline: {m.why}", None, m)
        held = len(self.suite.split(Split.HOLDOUT))
        why = (f"baseline: {self.spec.metric.name} {m.value:.4g} over {int(m.metrics['trials'])} "
               f"trials of {len(self.suite.split(Split.SEARCH))} search tasks "
               f"({int(m.metrics['trial_errors'])} errors, {int(m.metrics['trial_timeouts'])} "
               f"timeouts, counted apart); {held} tasks held out")  # fmt: skip
        return Verdict("keep", why, m.value, m)

    def candidate(
        self, experiment: int, slot: Slot, incumbent: int, parent: str, key: str | None = None
    ) -> Verdict:
        started = time.time()
        protected = self.spec.scope.protected
        reference = digest_protected(slot.path, protected) if protected else {}
        candidate_tree = workspace.staged_tree(slot)
        search = {t.name: t for t in self.suite.split(Split.SEARCH)}
        k = self.settings.attempts
        mine: list[TrialResult] = []

        def trial_pairs(names: Sequence[str], look: int) -> list[paired.Pair]:
            attempts = range((look - 1) * k, look * k)
            tasks = [search[name] for name in names]
            results = self._run(experiment, experiment, slot, tasks, attempts, Split.SEARCH)
            mine.extend(results)
            theirs = self._incumbent_trials(experiment, incumbent, slot, parent, candidate_tree,
                                            results, Split.SEARCH)  # fmt: skip
            return self._pairs(results, theirs)

        verdict, test, pairs = paired.sequential(list(search), self.alpha, self.looks, trial_pairs)
        if protected:
            changed = compare_digests(reference, digest_protected(slot.path, protected))
            if changed:
                m = self._measurement(experiment, mine, started)
                why = f"protected files changed during the trials: {', '.join(changed)}"
                return Verdict("tampered", why, None, m)
        name = self.spec.metric.name
        m = self._measurement(experiment, mine, started)
        if not m.ok:
            return Verdict(m.status, m.why, None, m)
        if not pairs:
            why = ("no trial of the candidate could be paired with one of the incumbent's (each "
                   "pair needs both trials to end with a reward); nothing decides")  # fmt: skip
            return Verdict("discard", why, m.value, m)
        errors = int(m.metrics["trial_errors"] + m.metrics["trial_timeouts"])
        counted = f"; {errors} error or timeout trials counted apart" if errors else ""
        why = paired.describe(test, name) + counted
        if verdict != "keep":
            simpler = self._simpler(slot, candidate_tree, parent) if test.tied else None
            if simpler is None:
                return Verdict("discard", f"not better: {why}", m.value, m)
            why = f"{why}; equal {name} and a smaller harness ({simpler}): prefer_simpler keeps it"
        overfit = self._holdout(experiment, incumbent, slot, parent, candidate_tree, m)
        if overfit is not None and overfit.startswith("overfit"):
            return Verdict("overfit", f"{overfit}; search: {why}", m.value, m)
        if overfit:
            why += f"; {overfit}"
        return Verdict("keep", why, m.value, m)

    def _pairs(
        self, mine: Sequence[TrialResult], theirs: Mapping[tuple[str, int], TrialRow]
    ) -> list[paired.Pair]:
        pairs = []
        for trial in mine:
            other = theirs.get((trial.task, trial.attempt))
            if trial.decides and other is not None and other.decides:
                pairs.append(
                    paired.Pair(trial.task, trial.attempt, self._value(trial), self._value(other))
                )
        return pairs

    def _incumbent_trials(
        self,
        judged: int,
        incumbent: int,
        slot: Slot,
        parent: str,
        candidate_tree: str,
        wanted: Sequence[TrialResult],
        split: Split,
    ) -> dict[tuple[str, int], TrialRow]:
        """The incumbent's trials of the same tasks and attempts: from the journal, and
        those it lacks run now on the incumbent's tree in the same slot."""
        have = self.store.latest(incumbent, split)
        missing: dict[int, list[Task]] = {}
        for trial in wanted:
            if (trial.task, trial.attempt) not in have:
                missing.setdefault(trial.attempt, []).append(self.suite.task(trial.task))
        if missing:
            workspace.checkout_tree(slot, parent)
            try:
                for attempt, tasks in sorted(missing.items()):
                    self._run(incumbent, judged, slot, tasks, [attempt], split)
            finally:
                workspace.checkout_tree(slot, candidate_tree)
            have = self.store.latest(incumbent, split)
        return have

    def _simpler(self, slot: Slot, candidate_tree: str, parent: str) -> str | None:
        """With prefer_simpler, why the candidate's harness is the smaller one, if it is."""
        if not self.settings.prefer_simpler:
            return None
        editable = self.spec.scope.editable
        mine = harness_size(slot.repo, candidate_tree, editable)
        theirs = harness_size(slot.repo, parent, editable)
        if mine >= theirs:
            return None
        return f"{mine[0]} lines, {mine[1]} bytes against {theirs[0]} lines, {theirs[1]} bytes"

    def _holdout(
        self,
        experiment: int,
        incumbent: int,
        slot: Slot,
        parent: str,
        candidate_tree: str,
        m: Measurement,
    ) -> str | None:
        """Run the sealed holdout for a would-be keep. `overfit: ...` when its mean falls
        below the incumbent's on the same tasks and attempts; otherwise the gap, for the
        why. The numbers go to the metrics; no holdout task is named anywhere."""
        tasks = self.suite.split(Split.HOLDOUT)
        if not tasks:
            return None
        results = self._run(
            experiment, experiment, slot, tasks, range(self.settings.attempts), Split.HOLDOUT
        )
        theirs = self._incumbent_trials(experiment, incumbent, slot, parent, candidate_tree, results,
                                        Split.HOLDOUT)  # fmt: skip
        pairs = self._pairs(results, theirs)
        deciding = [t for t in results if t.decides]
        if not deciding:
            return "the holdout produced no reward (every trial an error or a timeout): not checked"
        holdout = sum(self._value(t) for t in deciding) / len(deciding)
        search = m.value if m.value is not None else 0.0
        self.journal.set_holdout(experiment, holdout)
        m.metrics.update({"holdout": holdout, "gap": holdout - search})
        if not self._has_holdout_value(incumbent) and theirs:
            values = [self._value(t) for t in theirs.values() if t.decides]
            if values:
                self.journal.set_holdout(incumbent, sum(values) / len(values))
        gap = f"search {search:.3g}, holdout {holdout:.3g} (gap {holdout - search:+.3g})"
        if not pairs:
            return f"{gap}; no holdout pair to compare with the incumbent's"
        test = paired.paired_test(pairs)
        if test.candidate_mean < test.incumbent_mean:
            return (f"overfit: on the holdout {self.spec.metric.name} fell "
                    f"{test.incumbent_mean:.3g} -> {test.candidate_mean:.3g} over {test.n} paired "
                    f"trials; {gap}")  # fmt: skip
        return gap

    def _has_holdout_value(self, experiment: int) -> bool:
        record = self.journal.experiment(experiment)
        return record is not None and record.holdout is not None
