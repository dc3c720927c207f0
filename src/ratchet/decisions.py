"""What became of an experiment: one typed enum of decisions, each in one category.

Every view and export reads a decision's category, style and `results.tsv` status from
here, so they cannot disagree. A `Decision` is a `StrEnum`: the journal stores (and old
journals hold) the same strings as before, and `Decision.KEEP == "keep"`.

The baseline is stored as a `keep` by the proposer `baseline` (the first incumbent, the
commit every keep builds on), so the journal's incumbent is always its latest keep. It is
never counted as a keep where a count is shown: `is_baseline` tells it apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

BASELINE_PROPOSER = "baseline"  # the proposer column of a run's baseline experiment


class Category(StrEnum):
    KEPT = "kept"  # committed on the run branch: the new incumbent
    REJECTED = "rejected"  # measured, and not kept (not better, a gate, the holdout, stale)
    FAILED = "failed to measure"  # the candidate produced no usable measurement
    REFUSED = "refused"  # never measured: the proposal was refused or did not come
    INTERRUPTED = "interrupted"  # ratchet stopped while it was in flight


class Decision(StrEnum):
    KEEP = "keep"
    DISCARD = "discard"
    OVERFIT = "overfit"
    STALE = "stale"
    CRASH = "crash"
    TIMEOUT = "timeout"
    NO_METRIC = "no-metric"
    NOT_FINITE = "not-finite"
    TAMPERED = "tampered"
    NO_CHANGE = "no-change"
    DUPLICATE = "duplicate"
    OUT_OF_SCOPE = "out-of-scope"
    INVALID_PROPOSAL = "invalid-proposal"
    INTERRUPTED = "interrupted"

    @property
    def category(self) -> Category:
        return _CATEGORY[self]

    @property
    def tsv_status(self) -> str:
        """autoresearch's `status` column, which knows only keep, discard and crash: what
        was measured and not kept (or refused as a repeat or an empty change) is a
        `discard`, everything else that is not a keep a `crash`."""
        if self is Decision.KEEP:
            return "keep"
        if self.category is Category.REJECTED or self in _DISCARD_REFUSALS:
            return "discard"
        return "crash"

    @property
    def produced_no_measurement(self) -> bool:
        """Counts towards `[run] give_up_after`: a candidate that did not measure, or a
        proposer that is stuck (refused, or repeating itself). An empty change is not a
        failure, and an interruption neither counts nor breaks the streak."""
        return self.category in (Category.FAILED, Category.REFUSED) and self not in (
            Decision.NO_CHANGE,
        )

    @property
    def is_failure(self) -> bool:
        """Its output tail goes into the brief's recent failures."""
        return self.category not in (Category.KEPT, Category.INTERRUPTED) and self not in (
            Decision.DISCARD,
            Decision.NO_CHANGE,
            Decision.DUPLICATE,
        )

    @property
    def style(self) -> str:
        """How the live view, `log` and `show` colour it."""
        return _STYLE[self.category]


_CATEGORY: dict[Decision, Category] = {
    Decision.KEEP: Category.KEPT,
    Decision.DISCARD: Category.REJECTED,
    Decision.OVERFIT: Category.REJECTED,
    Decision.STALE: Category.REJECTED,
    Decision.CRASH: Category.FAILED,
    Decision.TIMEOUT: Category.FAILED,
    Decision.NO_METRIC: Category.FAILED,
    Decision.NOT_FINITE: Category.FAILED,
    Decision.TAMPERED: Category.FAILED,
    Decision.NO_CHANGE: Category.REFUSED,
    Decision.DUPLICATE: Category.REFUSED,
    Decision.OUT_OF_SCOPE: Category.REFUSED,
    Decision.INVALID_PROPOSAL: Category.REFUSED,
    Decision.INTERRUPTED: Category.INTERRUPTED,
}
_DISCARD_REFUSALS = frozenset({Decision.NO_CHANGE, Decision.DUPLICATE})
_STYLE: dict[Category, str] = {
    Category.KEPT: "bold green",
    Category.REJECTED: "yellow",
    Category.FAILED: "red",
    Category.REFUSED: "dim",
    Category.INTERRUPTED: "magenta",
}
UNDECIDED_STYLE = "cyan"  # an experiment still in flight, shown by its stage

# decisions whose experiments produced no usable measurement, for the journal's counts
NO_MEASUREMENT = frozenset(d for d in Decision if d.produced_no_measurement)


def decision_of(value: str | None) -> Decision | None:
    """A stored decision (None while in flight) as the enum."""
    return None if value is None else Decision(value)


def style_of(decision: str | None) -> str:
    return UNDECIDED_STYLE if decision is None else Decision(decision).style


def user_counts(
    counts: Mapping[str, int], baselines: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """Counts by decision and by category as a user reads them: `counts` (by decision)
    less `baselines` (the decisions of the baseline's attempts, which are no experiments
    of the search)."""
    by_decision = {d: n - baselines.get(d, 0) for d, n in counts.items()}
    by_decision = {d: n for d, n in by_decision.items() if n > 0}
    return by_decision, by_category(by_decision.items())


def by_category(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    totals = {category.value: 0 for category in Category}
    for decision, count in counts:
        totals[Decision(decision).category.value] += count
    return {category: n for category, n in totals.items() if n}
