"""When a run stops: the spec's limits, the command line's overrides, and the sentence
that says which one was reached."""

from __future__ import annotations

from dataclasses import dataclass

from ratchet.journal import RunCounts
from ratchet.measure import format_seconds
from ratchet.policy import improvement
from ratchet.specmodel import MetricSpec, Spec


@dataclass(frozen=True)
class Limits:
    max_experiments: int | None
    max_time: float | None
    patience: int | None
    target: float | None
    max_cost_usd: float | None = None
    give_up_after: int | None = None

    @classmethod
    def of(
        cls, spec: Spec, max_experiments: int | None = None, max_time: float | None = None
    ) -> Limits:
        """The spec's stop conditions, with the command line's overrides."""
        run = spec.run
        return cls(max_experiments or run.max_experiments, max_time or run.max_time,
                   run.patience, run.target, run.max_cost_usd, run.give_up_after)  # fmt: skip


def stop_reason(
    limits: Limits,
    counts: RunCounts,
    in_flight: int,
    elapsed: float,
    incumbent: float | None,
    metric: MetricSpec,
) -> str | None:
    """Why the run should start no more experiments, or None. Experiments in flight count
    towards `max_experiments`, so N slots never start more than the limit."""
    if (
        limits.max_experiments is not None
        and counts.experiments + in_flight >= limits.max_experiments
    ):
        return f"reached max_experiments ({limits.max_experiments})"
    if limits.max_time is not None and elapsed >= limits.max_time:
        return f"reached max_time ({format_seconds(limits.max_time)})"
    if limits.patience is not None and counts.since_keep >= limits.patience:
        return f"patience ran out: {counts.since_keep} experiments without a keep"
    if limits.max_cost_usd is not None and counts.cost_usd >= limits.max_cost_usd:
        return f"reached max_cost_usd (${counts.cost_usd:.2f} of ${limits.max_cost_usd:g})"
    if limits.give_up_after is not None and counts.failing >= limits.give_up_after:
        return (f"gave up: {counts.failing} experiments in a row produced no measurement; "
                "see 'ratchet log' for their whys")  # fmt: skip
    target = limits.target
    if (
        target is not None
        and incumbent is not None
        and improvement(incumbent, target, metric.goal) >= 0
    ):
        return f"reached the target: {metric.name} {incumbent:.6g}"
    return None
