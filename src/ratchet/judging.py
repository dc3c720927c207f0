"""Measuring one candidate against the incumbent until the policy decides.

This is where the measurement's integrity is held: every measurement gets its seed,
protected files are digested before and after each one (any change is `tampered`),
gates on secondary metrics and the `checks` command stand between a would-be keep and
a keep. The incumbent is re-measured in the same slot when the policy needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from ratchet import workspace
from ratchet.executors import Executor
from ratchet.gates import check_gates, parse_gates
from ratchet.integrity import compare_digests, digest_protected
from ratchet.journal import Journal
from ratchet.measure import Measurement, budget_warning, format_seconds, measure_candidate
from ratchet.noise_model import noise_from_rows
from ratchet.policy import Greedy, NoiseAware, NoiseModel, compare, improvement
from ratchet.sandbox import Sandbox, pidfile_for
from ratchet.spec import Spec
from ratchet.workspace import Slot


@dataclass(frozen=True)
class Verdict:
    decision: str
    why: str
    value: float | None  # the candidate's mean, when it was measured
    measurement: Measurement | None  # the last one


@dataclass(frozen=True)
class NoiseReport:
    """What `ratchet noise` prints and stores: one commit measured again and again."""

    experiment: int
    n: int
    mean: float
    sd: float | None  # of this commit's measurements
    low: float
    high: float
    pooled_sd: float | None  # over every repeated measurement of the run
    pooled_df: int
    smallest_detectable: float | None  # the smallest improvement the test can keep
    warning: str | None  # when that is more than the run can plausibly find


class Judge:
    def __init__(
        self,
        spec: Spec,
        journal: Journal,
        run: str,
        policy: Greedy | NoiseAware,
        executor: Executor,
        sandbox: Sandbox,
        envs: Sequence[Mapping[str, str]],
        redact: Callable[[str], str],
        on_measure: Callable[[int, int], None],
    ) -> None:
        self.spec, self.journal, self.run, self.policy = spec, journal, run, policy
        self.executor, self.sandbox = executor, sandbox  # the sandbox: checks and holdout
        self.envs, self.redact, self.on_measure = envs, redact, on_measure
        # while a measurement runs, other slots may decide (see scheduler.py)
        self.waiting: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        self.gates = parse_gates(spec.metric.gates)
        record = journal.run(run)
        self.salt = f"{run}:{record.base_commit}:{record.created_at}" if record else run
        self.noise = NoiseModel()
        self.taken: dict[str, int] = {}  # measurements taken or in flight, by key: their seeds
        self._rebuild_noise()
        self._set_up()

    def _set_up(self) -> None:
        """What a kind of judge needs beyond this (harness mode: its suite and runner)."""

    def interrupt(self) -> None:
        """Stop what runs outside the slots' process groups (a suite's trials)."""

    def _rebuild_noise(self) -> None:
        """A resumed run's noise estimate: the same measurements that built it first."""
        baseline = self.journal.baseline(self.run)
        rows = self.journal.measurement_rows(self.run)
        for experiment, _, _, _ in rows:
            self.taken[str(experiment)] = self.taken.get(str(experiment), 0) + 1
        self.noise = noise_from_rows(rows, baseline.id if baseline else None,
                                     self.spec.policy.paired_seeds)  # fmt: skip

    def seed(self, key: str, k: int | None = None) -> int:
        """Paired: the k-th measurement of every commit gets seed k. Otherwise a hash of
        the run, the key and a count: unrelated across measurements, experiments and
        runs, so that no generator seeded with it draws correlated values."""
        count = self.taken.get(key, 0)
        if self.spec.policy.paired_seeds:
            return count if k is None else k
        salted = f"{self.salt}:{key}:{count}".encode()
        return int.from_bytes(hashlib.blake2b(salted, digest_size=8).digest(), "big") % 2**31

    def measure(
        self,
        experiment: int,
        slot: Slot,
        tree: str,
        key: str | None = None,
        k: int | None = None,
        status: str | None = None,
    ) -> Measurement:
        """One measurement of `tree` (checked out in `slot`), recorded in the journal.

        `key` names the samples it belongs to when they are not the experiment's own: a
        candidate rebased onto a newer incumbent is another program. Its measurements are
        recorded as `rebased`. `k` is its index within the candidate's test (the paired
        seed); `status` replaces `ok` (`confirm`: a keep's confirmation).
        """
        key = key or str(experiment)
        self.on_measure(experiment, slot.index)
        seed = self.seed(key, k)
        self.taken[key] = self.taken.get(key, 0) + 1
        with self.waiting():
            m = self.executor.measure(slot, tree, self.spec.metric, self.envs[slot.index],
                                      seed, self.redact)  # fmt: skip
        recorded: str = m.status
        if m.ok:
            recorded = "rebased" if key != str(experiment) else status or m.status
        self.journal.add_measurement(experiment, m.seed, recorded, m.value, m.metrics,
                                     m.duration, m.output, m.started_at)  # fmt: skip
        return m

    def add(self, key: str, m: Measurement) -> None:
        """An incumbent's measurement joins the noise estimate (paired: once per seed)."""
        assert m.value is not None
        self.noise.add(key, m.value, m.seed if self.spec.policy.paired_seeds else None)

    def baseline(self, experiment: int, slot: Slot) -> Verdict:
        repeats = 1 if self.policy.max_measurements == 1 else self.spec.policy.baseline_repeats
        last: Measurement | None = None
        base = workspace.staged_tree(slot)
        longest = 0.0
        for _ in range(repeats):
            last = self.measure(experiment, slot, base)
            if last.status == "timeout":
                hint = "; the base commit itself does not fit [metric] budget: raise it"
                return Verdict(last.status, f"baseline: {last.why}{hint}", None, last)
            if not last.ok:
                return Verdict(last.status, f"baseline: {last.why}", None, last)
            self.add(str(experiment), last)
            longest = max(longest, last.duration)
        samples = self.noise.samples(str(experiment))
        noise = self.noise.estimate
        why = f"baseline: {self.spec.metric.name} {samples.mean:.6g} on the base commit"
        if noise.deterministic:
            why += (f" ({samples.n} measurements on different seeds agreed exactly: treated as "
                    "deterministic while every repeat agrees; each keep is measured twice)")  # fmt: skip
        elif noise.sd is not None:
            why += f" (n={samples.n}, sd {noise.sd:.3g} of one measurement, {noise.df} df)"
        warning = self.warning(samples.mean)  # no incumbent in the journal yet: this is it
        if warning:
            why += f"; warning: {warning}"
        tight = budget_warning(self.spec.metric.budget, longest)
        if tight:
            why += f"; warning: {tight}"
        return Verdict("keep", why, samples.mean, last)

    def warning(self, incumbent_value: float | None = None) -> str | None:
        """A sentence when the noise leaves nothing the run could plausibly keep, measured
        against `incumbent_value` (the journal's incumbent when not given)."""
        if not isinstance(self.policy, NoiseAware):
            return None
        noise = self.noise.estimate
        if noise.sd is None or noise.deterministic:
            return None
        smallest = self.policy.smallest_detectable(noise)
        metric, target = self.spec.metric, self.spec.run.target
        advice = ("measure less noisily (a longer or averaged evaluation, a fixed seed), "
                  "raise max_repeats, or run `ratchet noise` to firm up the estimate")  # fmt: skip
        if self.spec.policy.min_delta > 0 and smallest > 2 * self.spec.policy.min_delta:
            return (f"the smallest improvement this noise lets a keep prove is {smallest:.4g} "
                    f"(sd {noise.sd:.3g}, {noise.df} df), over twice min_delta "
                    f"{self.spec.policy.min_delta:g}; {advice}")  # fmt: skip
        if incumbent_value is None:
            incumbent = self.journal.incumbent(self.run)
            incumbent_value = incumbent.value if incumbent is not None else None
        if target is not None and incumbent_value is not None:
            left = improvement(target, incumbent_value, metric.goal)
            if 0 < left < smallest:
                return (f"the smallest improvement this noise lets a keep prove is {smallest:.4g} "
                        f"(sd {noise.sd:.3g}, {noise.df} df), more than the {left:.4g} left to "
                        f"the target; {advice}")  # fmt: skip
        return None

    def candidate(
        self, experiment: int, slot: Slot, incumbent: int, parent: str, key: str | None = None
    ) -> Verdict:
        """Measure the candidate in `slot` (its change collected) until the policy decides."""
        key = key or str(experiment)
        protected = self.spec.scope.protected
        reference = digest_protected(slot.path, protected) if protected else {}
        candidate_tree = workspace.staged_tree(slot)
        last: list[Measurement] = []
        tampered: list[str] = []
        paired = self.spec.policy.paired_seeds

        def tamper_check(m: Measurement) -> bool:
            tampered.extend(m.tampered)  # what a remote worker saw
            if protected:
                tampered.extend(compare_digests(reference, digest_protected(slot.path, protected)))
            return bool(tampered)

        def measure_candidate_once(k: int, status: str | None = None) -> float | None:
            m = self.measure(experiment, slot, candidate_tree, key, k, status)
            last.append(m)
            return None if tamper_check(m) or not m.ok else m.value

        def measure_incumbent_once(k: int) -> float | None:
            workspace.checkout_tree(slot, parent)
            m = self.measure(incumbent, slot, parent, k=k)
            changed = tamper_check(m)
            workspace.checkout_tree(slot, candidate_tree)
            return None if changed or not m.ok else m.value

        if not self.noise.samples(str(incumbent)).n:
            # a greedy keep of a resumed run has no confirmation to rebuild its samples
            # from: its recorded value stands in, as greedy compares with it anyway
            record = self.journal.experiment(incumbent)
            if record is not None and record.value is not None:
                self.noise.add(str(incumbent), record.value)
        judgement = compare(
            self.policy, self.noise, str(incumbent), self.spec.metric.goal,
            self.spec.metric.name, measure_candidate_once, measure_incumbent_once,
            paired=paired, measure_confirmation=lambda k: measure_candidate_once(k, "confirm"),
        )  # fmt: skip
        measurement = last[-1] if last else None
        if judgement is not None and judgement.incumbent:
            # re-measured: its value is the mean of its unselected measurements, except
            # when it was just beaten: then those of this test were selected (a keep
            # needed them to be poor), and its value stays what it was before the test
            if judgement.verdict == "keep" and judgement.reference is not None:
                self.journal.update_value(incumbent, judgement.reference)
            else:
                self.journal.update_value(incumbent, self.noise.samples(str(incumbent)).mean)
        if tampered:
            why = f"protected files changed during the measurement: {', '.join(tampered)}"
            return Verdict("tampered", why, None, measurement)
        if judgement is None:
            assert measurement is not None
            return Verdict(measurement.status, measurement.why, None, measurement)
        value = judgement.value
        if judgement.verdict != "keep":
            return Verdict("discard", judgement.why, value, measurement)
        assert measurement is not None
        failed_gate = check_gates(self.gates, measurement.metrics)
        if failed_gate:
            return Verdict("discard", f"would keep, but a gate failed: {failed_gate}", value,
                           measurement)  # fmt: skip
        failed_checks = self.run_checks(slot)
        if failed_checks:
            return Verdict("discard", f"would keep, but {failed_checks}", value, measurement)
        if self.spec.metric.confirm:
            overfit = self.confirm(experiment, slot, incumbent, parent, candidate_tree)
            if overfit:
                decision = "overfit" if overfit.startswith("overfit") else "discard"
                return Verdict(decision, overfit, value, measurement)
        # the new incumbent's noise group starts with the confirmation: unselected values
        # greedy has no confirmation: its one measurement is the new incumbent's value
        values = judgement.confirmed or judgement.candidate
        for m, v in zip(last[len(last) - len(values) :], values, strict=True):
            assert m.value == v
            self.noise.add(str(experiment), v, m.seed if paired else None)
        return Verdict("keep", judgement.why, value, measurement)

    def holdout(self, experiment: int, slot: Slot) -> Measurement:
        """One run of the confirmation command, recorded apart from the search metric."""
        metric = self.spec.metric
        assert metric.confirm is not None
        spec = metric.model_copy(update={"command": metric.confirm, "evaluate": None,
                                         "budget": metric.confirm_budget or metric.budget})  # fmt: skip
        self.on_measure(experiment, slot.index)
        with self.waiting():
            m = measure_candidate(slot.path, spec, self.sandbox, self.envs[slot.index], 0,
                                  self.redact)  # fmt: skip
        status = "holdout" if m.ok else f"holdout-{m.status}"
        self.journal.add_measurement(experiment, m.seed, status, m.value, m.metrics, m.duration,
                                     m.output, m.started_at)  # fmt: skip
        return m

    def confirm(
        self, experiment: int, slot: Slot, incumbent: int, parent: str, candidate_tree: str
    ) -> str | None:
        """Held-out confirmation of a would-be keep; a sentence when it must not be kept.

        The holdout is measured once per commit, so its noise is taken to be the search
        metric's: a keep whose holdout is worse than the incumbent's by more than that
        noise allows (at `confidence`) is `overfit`.
        """
        mine = self.holdout(experiment, slot)
        if not mine.ok or mine.value is None:
            return f"would keep, but the confirmation failed ({mine.status}): {mine.why}"
        self.journal.set_holdout(experiment, mine.value)
        record = self.journal.experiment(incumbent)
        theirs = record.holdout if record is not None else None
        if theirs is None:
            workspace.checkout_tree(slot, parent)
            measured = self.holdout(incumbent, slot)
            workspace.checkout_tree(slot, candidate_tree)
            if not measured.ok or measured.value is None:
                return None  # nothing to compare with: the search decides
            theirs = measured.value
            self.journal.set_holdout(incumbent, theirs)
        goal, name = self.spec.metric.goal, self.spec.metric.name
        delta = improvement(mine.value, theirs, goal)
        noise = self.noise.estimate
        allowed = 0.0
        if noise.sd:
            policy = NoiseAware(self.spec.policy.confidence)
            allowed = noise.sd * math.sqrt(2) * policy.threshold(noise.df)
        if delta < -allowed:
            return (f"overfit: {name} on the holdout {theirs:.6g} -> {mine.value:.6g} is worse "
                    f"than the incumbent's by {-delta:.4g}, beyond the noise ({allowed:.4g})")  # fmt: skip
        return None

    def noise_report(self, experiment: int) -> NoiseReport:
        values = self.noise.samples(str(experiment)).values
        mean = sum(values) / len(values)
        sd = statistics.stdev(values) if len(values) > 1 else None
        pooled = self.noise.estimate
        policy = NoiseAware(self.spec.policy.confidence, self.spec.policy.min_delta,
                            self.spec.policy.max_repeats)  # fmt: skip
        smallest = policy.smallest_detectable(pooled)
        return NoiseReport(experiment, len(values), mean, sd, min(values), max(values),
                           pooled.sd, pooled.df, None if math.isinf(smallest) else smallest,
                           self.warning())  # fmt: skip

    def run_checks(self, slot: Slot) -> str | None:
        """The `checks` command (tests, say), run only for a would-be keep."""
        command = self.spec.metric.checks
        if not command:
            return None
        started = time.monotonic()
        budget = self.spec.metric.checks_budget
        with self.waiting():
            result = self.sandbox.run(command, slot.path, self.envs[slot.index], budget,
                                      self.spec.metric.grace, pidfile_for(slot.path))  # fmt: skip
        if result.timed_out:
            return f"the checks ran past their {format_seconds(budget)} budget"
        if result.returncode != 0:
            lines = [line for line in self.redact(result.output).splitlines() if line.strip()]
            last = lines[-1].strip()[:200] if lines else "no output"
            return f"the checks failed (exit code {result.returncode}, {time.monotonic() - started:.1f}s): {last}"
        return None
