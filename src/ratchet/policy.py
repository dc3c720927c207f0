"""Deciding keep or discard from measurements, and the noise model behind it.

`compare` measures one candidate against the incumbent until the policy decides; the
engine drives it with real measurements and `bench/noise.py` with simulated ones. The
noise-aware test is a group-sequential one (see docs/policy.md for the proof sketch):

- the noise is estimated only from measurements that were not selected on their value:
  repeated measurements of incumbents (the baseline, `ratchet noise`, the fresh
  measurements taken while a candidate is tested, each keep's confirmation);
- a candidate is first *screened* on one measurement against the incumbent's reference
  (a futility stop only: it can discard, never keep);
- a candidate that passes is tested on measurements interleaved in time with fresh ones
  of the incumbent (C I C I C ...), whose time centroids coincide at every look, so that
  a linear trend cancels;
- the boundary at each of the at most `max_measurements - 1` looks is the Student's t
  quantile at level alpha / looks (Bonferroni alpha spending), with the degrees of
  freedom of the noise estimate: the chance that any look crosses is at most alpha;
- a keep is recorded at fresh confirmation measurements, not at the values that won it.

This module imports nothing of ratchet, and scipy only when a quantile is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol

Goal = Literal["minimize", "maximize"]
Verdict = Literal["keep", "discard"]

SCREEN_Z = 1.0  # one measurement this far (in se) better than the reference earns a test
FUTILITY_T = 0.5  # at the first look, a t below this ends the test (non-binding)
FUTILITY_STEP = 0.3  # ... and the futility line rises by this at each later look
CONFIRMATIONS = 1  # fresh measurements of a keep, at which it is recorded


def improvement(candidate: float, incumbent: float, goal: Goal) -> float:
    """How much better the candidate is; positive means better, whatever the goal."""
    return incumbent - candidate if goal == "minimize" else candidate - incumbent


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile with `df` degrees of freedom (the normal's when df is 0)."""
    # lazily, and scipy.special rather than scipy.stats (which takes seconds to import):
    # the CLI, and a run on a deterministic metric, start without it
    from scipy.special import ndtri, stdtrit

    if df <= 0:
        return float(ndtri(p))
    return float(stdtrit(df, p))


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _mean(values: list[float] | tuple[float, ...]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class Samples:
    """Measured values of one commit's metric."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return _mean(self.values)

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Noise:
    """The standard deviation of one measurement, pooled over repeated measurements."""

    sd: float | None  # None until some commit has been measured twice
    df: int  # degrees of freedom behind the estimate

    @property
    def deterministic(self) -> bool:
        """Every repeat so far agreed exactly (confirmed again at every keep)."""
        return self.sd == 0 and self.df >= 1


@dataclass
class NoiseModel:
    """Repeated measurements of the same commit, pooled: sums of squares within groups.

    Only measurements whose inclusion did not depend on their own value belong here
    (an incumbent's, never a candidate's: a candidate is re-measured after a good draw).
    A value on a seed its group already has is not a new draw and is left out. Totals
    are kept up to date, so an estimate costs the same after 100,000 experiments.
    """

    groups: dict[str, list[float]] = field(default_factory=dict)
    _seeds: dict[str, set[int]] = field(default_factory=dict)
    _ss: dict[str, float] = field(default_factory=dict)
    _total_ss: float = 0.0
    _total_df: int = 0

    def add(self, key: str, value: float, seed: int | None = None) -> bool:
        """Add a value; False when its seed was measured before (a paired repeat)."""
        if seed is not None:
            seeds = self._seeds.setdefault(key, set())
            if seed in seeds:
                return False
            seeds.add(seed)
        values = self.groups.setdefault(key, [])
        values.append(value)
        mean = _mean(values)
        ss = sum((v - mean) ** 2 for v in values)
        self._total_ss += ss - self._ss.get(key, 0.0)
        self._total_df += 1 if len(values) > 1 else 0
        self._ss[key] = ss
        return True

    def samples(self, key: str) -> Samples:
        return Samples(tuple(self.groups.get(key, ())))

    @property
    def estimate(self) -> Noise:
        df = self._total_df
        return Noise(math.sqrt(max(self._total_ss, 0.0) / df) if df else None, df)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    why: str
    candidate: tuple[float, ...] = ()  # the measurements that decided
    incumbent: tuple[float, ...] = ()  # the incumbent's, taken while the candidate was tested
    confirmed: tuple[float, ...] = ()  # a keep's fresh measurements: its recorded value
    reference: float | None = None  # the incumbent's value before this candidate

    @property
    def value(self) -> float | None:
        """The candidate's value as recorded: its confirmation if it has one."""
        values = self.confirmed or self.candidate
        return _mean(values) if values else None


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def max_measurements(self) -> int:
        """The most measurements of one candidate."""
        ...


@dataclass(frozen=True)
class Greedy:
    """Keep only a strict improvement of one measurement; a tie is not one."""

    name: str = "greedy"
    max_measurements: int = 1


@dataclass(frozen=True)
class NoiseAware:
    """The group-sequential test; `confidence` bounds a trial's false-keep probability."""

    confidence: float = 0.99
    min_delta: float = 0.0
    max_measurements: int = 6
    name: str = "noise-aware"

    @property
    def alpha(self) -> float:
        return 1 - self.confidence

    @property
    def looks(self) -> int:
        """Looks at 2, 3, ... max_measurements measurements of the candidate."""
        return max(self.max_measurements - 1, 1)

    def boundary(self, df: int) -> float:
        """The t a look must reach: alpha spent equally over the looks."""
        return t_quantile(1 - self.alpha / self.looks, df)

    def futility(self, look: int) -> float:
        return FUTILITY_T + FUTILITY_STEP * (look - 1)

    def smallest_detectable(self, noise: Noise) -> float:
        """The improvement that, measured exactly, would just be kept at the last look."""
        if noise.sd is None:
            return math.inf
        k = self.max_measurements
        se = noise.sd * math.sqrt(1 / k + 1 / max(k - 1, 1))
        return max(self.min_delta, se * self.boundary(noise.df))

    def threshold(self, df: int) -> float:
        """The one-look t quantile at `confidence` (the holdout's allowance)."""
        return t_quantile(self.confidence, df)


def policy_for(kind: str, confidence: float = 0.99, min_delta: float = 0.0,
               max_measurements: int = 6) -> Greedy | NoiseAware:  # fmt: skip
    if kind == "greedy":
        return Greedy()
    return NoiseAware(confidence, min_delta, max_measurements)


Measure = Callable[[int], float | None]  # the k-th measurement (0-based), None on failure


def compare(
    policy: Greedy | NoiseAware,
    noise: NoiseModel,
    incumbent: str,
    goal: Goal,
    metric: str,
    measure_candidate: Measure,
    measure_incumbent: Measure,
    paired: bool = False,
    measure_confirmation: Measure | None = None,
) -> Judgement | None:
    """Measure the candidate until the policy decides; None when a measurement failed.

    The incumbent's fresh measurements join `noise` under `incumbent` as they are taken
    (with `paired`, the k-th of them runs on the candidate's k-th seed). A keep is then
    measured `CONFIRMATIONS` more times (`measure_confirmation`, by default
    `measure_candidate`): those values, not the ones that won, are its recorded value.
    """
    confirm = measure_confirmation or measure_candidate
    reference = noise.samples(incumbent)
    first = measure_candidate(0)
    if first is None:
        return None
    old = reference.mean
    delta = improvement(first, old, goal)
    change = f"{metric} {_fmt(old)} -> {_fmt(first)}"
    if isinstance(policy, Greedy):
        if delta > 0:
            return Judgement("keep", f"kept: {change} (better by {delta:.4g}; greedy, one measurement each)",
                             (first,), reference=old)  # fmt: skip
        what = (
            "ties the incumbent; a tie is not a keep" if delta == 0 else f"is worse by {-delta:.4g}"
        )
        return Judgement("discard", f"discarded: {change} {what}", (first,), reference=old)
    estimate = noise.estimate
    if estimate.deterministic:
        return _deterministic(policy, noise, incumbent, goal, metric, first, old, confirm)
    if estimate.sd is None:  # an incumbent measured once (a resumed greedy run, say)
        again = measure_incumbent(1)
        if again is None:
            return None
        noise.add(incumbent, again)
        estimate = noise.estimate
        if estimate.deterministic:
            return _deterministic(policy, noise, incumbent, goal, metric, first, old,
                                  confirm)  # fmt: skip
    assert estimate.sd is not None
    se = estimate.sd * math.sqrt(1 + 1 / reference.n)
    z = delta / se
    if z < SCREEN_Z:
        why = (f"discarded: {change}: screen z = delta {delta:.4g} / se {se:.3g} = {z:.2f} "
               f"< {SCREEN_Z:g} (1 measurement vs the incumbent's {reference.n}; "
               f"sd {estimate.sd:.3g}, {estimate.df} df)")  # fmt: skip
        return Judgement("discard", why, (first,), reference=old)
    return _sequential(policy, noise, incumbent, goal, metric, first, old, measure_candidate,
                       measure_incumbent, confirm, paired)  # fmt: skip


def _sequential(
    policy: NoiseAware,
    noise: NoiseModel,
    incumbent: str,
    goal: Goal,
    metric: str,
    first: float,
    old: float,
    measure_candidate: Measure,
    measure_incumbent: Measure,
    confirm: Measure,
    paired: bool,
) -> Judgement | None:
    """C I C I C ...: the candidate's mean against the incumbent's fresh measurements."""
    mine, theirs = [first], list[float]()
    for k in range(1, policy.max_measurements):
        fresh = measure_incumbent(k - 1 if paired else k)
        if fresh is None:
            return None
        theirs.append(fresh)
        noise.add(incumbent, fresh, (k - 1) if paired else None)
        value = measure_candidate(k)
        if value is None:
            return None
        mine.append(value)
        estimate = noise.estimate
        assert estimate.sd is not None
        delta = improvement(_mean(mine), _mean(theirs), goal)
        se = estimate.sd * math.sqrt(1 / len(mine) + 1 / len(theirs))
        t = delta / se if se > 0 else (math.inf if delta > 0 else -math.inf)
        look = k
        bound = policy.boundary(estimate.df)
        facts = (f"t = delta {delta:.4g} / se {se:.3g} = {t:.2f}; n={len(mine)} vs "
                 f"{len(theirs)} interleaved; sd {estimate.sd:.3g}, {estimate.df} df")  # fmt: skip
        change = f"{metric} {_fmt(_mean(theirs))} -> {_fmt(_mean(mine))}"
        if t >= bound:
            if delta <= policy.min_delta:
                why = (f"discarded: {change} is significant ({facts}; t >= {bound:.2f}) but "
                       f"delta {delta:.4g} is not above min_delta {policy.min_delta:g}")  # fmt: skip
                return Judgement("discard", why, tuple(mine), tuple(theirs), reference=old)
            return _confirm(policy, f"kept: {change} ({facts}; t >= {bound:.2f}, look {look} "
                            f"of {policy.looks} at alpha {policy.alpha:g})", mine, theirs, old,
                            confirm)  # fmt: skip
        if t < policy.futility(look) or k == policy.max_measurements - 1:
            reason = (f"t < {policy.futility(look):.2f}, futility at look {look}"
                      if t < policy.futility(look) else
                      f"t < {bound:.2f} at the last look")  # fmt: skip
            why = f"discarded: {change} ({facts}; {reason})"
            return Judgement("discard", why, tuple(mine), tuple(theirs), reference=old)
    raise AssertionError("max_measurements is at least 2")


def _confirm(
    policy: NoiseAware,
    why: str,
    mine: list[float],
    theirs: list[float],
    old: float,
    confirm: Measure,
) -> Judgement | None:
    confirmed = []
    for k in range(CONFIRMATIONS):
        value = confirm(len(mine) + k)
        if value is None:
            return None
        confirmed.append(value)
    why += f"; recorded at {CONFIRMATIONS} fresh measurement{'s' * (CONFIRMATIONS > 1)}"
    return Judgement("keep", why, tuple(mine), tuple(theirs), tuple(confirmed), old)


def _deterministic(
    policy: NoiseAware,
    noise: NoiseModel,
    incumbent: str,
    goal: Goal,
    metric: str,
    first: float,
    old: float,
    confirm: Measure,
) -> Judgement | None:
    """Every repeat so far agreed exactly: one measurement decides, a second confirms it.

    The confirmation is the evidence that keeps the claim honest: a metric that only
    looked deterministic (a coarse value, a clock that ran out at the same step) shows
    its noise as soon as two measurements of one tree differ, and then no keep is made
    on it and the noise is estimated from then on.
    """
    delta = improvement(first, old, goal)
    n = noise.estimate.df + len(noise.groups)  # the repeats behind the claim, roughly
    change = f"{metric} {_fmt(old)} -> {_fmt(first)}"
    basis = f"deterministic: every repeated measurement so far agreed exactly ({n} of them)"
    if delta <= policy.min_delta:
        if delta == 0:
            what = "ties the incumbent; a tie is not a keep"
        elif delta > 0:
            what = f"delta {delta:.4g} is not above min_delta {policy.min_delta:g}"
        else:
            what = f"is worse by {-delta:.4g}"
        return Judgement(
            "discard", f"discarded: {change} {what} ({basis})", (first,), reference=old
        )
    again = confirm(1)
    if again is None:
        return None
    if again != first:
        # not deterministic after all; the two values are the candidate's, not selected
        # on their difference, so they are the first evidence of the noise
        noise.add(f"{incumbent}:determinism-check", first)
        noise.add(f"{incumbent}:determinism-check", again)
        why = (f"discarded: {change}, but measured again it gave {_fmt(again)}: the metric "
               "is not deterministic; its noise is estimated from now on")  # fmt: skip
        return Judgement("discard", why, (first, again), reference=old)
    why = f"kept: {change} (delta {delta:.4g}; {basis}, and a second measurement gave the same)"
    return Judgement("keep", why, (first,), (), (again,), old)
