"""Paired decisions on a suite, from numbers only: candidate against incumbent, task by
task, on the same tasks and attempts.

- Binary rewards (every reward 0 or 1): an exact McNemar test. Only discordant pairs
  carry information: under "no change", the candidate wins each of the `b + c` of them
  with probability 1/2, so the one-sided p-value is P(Binomial(b + c, 1/2) >= b).
- Partial credit: an exact sign-flip (permutation) test of the paired differences: under
  "no change" each difference is as likely to have the other sign. Exact enumeration up
  to 16 non-zero differences, the normal limit of the same statistic beyond.

Sequentially, as the noise-aware policy does: at most `looks` looks, each at level
`alpha / looks` (a Bonferroni split, so pure noise keeps at most `alpha` of the time
whatever happens between looks). A candidate not ahead stops at once (futility); one
ahead but not yet significant is looked at again with fresh trials of only the tasks
that decide: those whose candidate and incumbent rewards differed. Trials that ended in
an error or a timeout never make a pair.

This module imports nothing of ratchet.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

EXACT_FLIPS = 16  # non-zero differences enumerated exactly (2**16 sign patterns)
Step = Literal["keep", "discard", "continue"]


@dataclass(frozen=True)
class Pair:
    task: str
    attempt: int
    candidate: float
    incumbent: float

    @property
    def difference(self) -> float:
        return self.candidate - self.incumbent


@dataclass(frozen=True)
class PairedTest:
    n: int  # pairs
    better: int  # pairs the candidate won
    worse: int  # pairs the candidate lost
    candidate_mean: float
    incumbent_mean: float
    p_value: float  # one-sided: that the candidate is better
    binary: bool

    @property
    def method(self) -> str:
        return "exact McNemar" if self.binary else "sign-flip"

    @property
    def ahead(self) -> bool:
        return self.candidate_mean > self.incumbent_mean

    @property
    def tied(self) -> bool:
        return math.isclose(self.candidate_mean, self.incumbent_mean, abs_tol=1e-12)


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)


def sign_flip_p(differences: Sequence[float]) -> float:
    """One-sided p-value that the mean difference is positive, by flipping signs."""
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return 1.0
    observed = sum(nonzero)
    if len(nonzero) <= EXACT_FLIPS:
        magnitudes = [abs(d) for d in nonzero]
        hits = 0
        for signs in itertools.product((1, -1), repeat=len(magnitudes)):
            total = sum(s * m for s, m in zip(signs, magnitudes, strict=True))
            hits += total >= observed - 1e-12
        return float(hits / 2 ** len(magnitudes))
    sd = math.sqrt(sum(d * d for d in nonzero))
    return 0.5 * math.erfc(observed / sd / math.sqrt(2))


def paired_test(pairs: Sequence[Pair]) -> PairedTest:
    n = len(pairs)
    if n == 0:
        return PairedTest(0, 0, 0, 0.0, 0.0, 1.0, True)
    better = sum(p.difference > 0 for p in pairs)
    worse = sum(p.difference < 0 for p in pairs)
    binary = all(p.candidate in (0.0, 1.0) and p.incumbent in (0.0, 1.0) for p in pairs)
    if binary:
        p_value = binomial_tail(better, better + worse)
    else:
        p_value = sign_flip_p([p.difference for p in pairs])
    candidate = sum(p.candidate for p in pairs) / n
    incumbent = sum(p.incumbent for p in pairs) / n
    return PairedTest(n, better, worse, candidate, incumbent, p_value, binary)


def step(test: PairedTest, alpha: float, look: int, looks: int) -> Step:
    """At look `look` (1-based) of at most `looks`: keep, discard, or look again."""
    if test.n and test.ahead and test.p_value <= alpha / looks:
        return "keep"
    if not test.ahead or look >= looks:
        return "discard"
    return "continue"


def deciding_tasks(pairs: Sequence[Pair]) -> list[str]:
    """The tasks worth another trial: those where the two rewards differed."""
    return sorted({p.task for p in pairs if p.difference != 0})


def sequential(
    tasks: Sequence[str],
    alpha: float,
    looks: int,
    trial_pairs: Callable[[Sequence[str], int], list[Pair]],
) -> tuple[Step, PairedTest, list[Pair]]:
    """The sequential paired test: `trial_pairs(tasks, look)` runs (or simulates) one look's
    trials of `tasks` and returns their pairs; the first look has every task, each later
    one only those that decide. Returns the step it ended on (`keep` or `discard`), the
    last test and every pair."""
    pairs: list[Pair] = []
    test = paired_test(pairs)
    for look in range(1, looks + 1):
        pairs += trial_pairs(tasks, look)
        test = paired_test(pairs)
        verdict = step(test, alpha, look, looks) if pairs else "discard"
        if verdict != "continue":
            return verdict, test, pairs
        tasks = deciding_tasks(pairs)
    return "discard", test, pairs


def describe(test: PairedTest, name: str) -> str:
    """One clause for a why: the means and the test."""
    return (f"{name} {test.incumbent_mean:.3g} -> {test.candidate_mean:.3g} over {test.n} paired "
            f"trials ({test.better} better, {test.worse} worse; {test.method} p={test.p_value:.3g})")  # fmt: skip
