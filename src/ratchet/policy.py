"""Deciding keep or discard from measurements, and the noise model behind it.

`compare` measures one candidate against the incumbent until the policy decides; the
engine drives it with real measurements and `bench/noise.py` with simulated ones. The
noise-aware test is a group-sequential one (see docs/policy.md for the proof sketch):

- the noise model: a measurement is its commit's level + a common trend (slope x time,
  time counted in measurements) + noise. The sd (and the slope, taken out of the sd once
  the estimate can afford the df) are pooled within commits, only from measurements
  that were not selected on their value: repeated measurements of incumbents (the
  baseline, `ratchet noise`, those taken while a candidate is tested, each keep's
  confirmation);
- look 1, the screen: one measurement against the incumbent's latest ones, a futility
  stop only (it can discard, never keep);
- looks 2, 3, ...: C I C I C ..., the candidate's mean against the incumbent's fresh
  measurements, interleaved so that their time centroids coincide and a trend cancels;
  a candidate's own spread, when larger, replaces the pooled sd in its se, and no keep
  rests on one measurement;
- the boundary is the same t quantile at every look, its level computed (by simulating
  this very test) so that pure noise crosses at any look with probability at most
  alpha: a Pocock-type boundary with the futility stops binding;
- a keep is recorded at fresh confirmation measurements, not at the values that won it.

This module imports nothing of ratchet, and numpy and scipy only when a test needs them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol

Goal = Literal["minimize", "maximize"]
Verdict = Literal["keep", "discard"]

FUTILITY_T = 0.7  # at the first look, a t below this ends the test (always applied)
FUTILITY_STEP = 0.3  # ... and the futility line rises by this at each later look
SCREEN_MIN_N = 3  # no screen against an incumbent measured fewer times (a new one)
SCREEN_WINDOW = 6  # the incumbent's latest measurements, the screen's reference
OWN_SPREAD_N = 3  # from this many measurements a candidate's own spread can widen its se
MIN_KEEP_N = 2  # no keep on one measurement: one outlier must not carry it
CONFIRMATIONS = 1  # fresh measurements of a keep, at which it is recorded
TREND_MIN_DF = 10  # the trend is taken out of the sd from this many degrees of freedom


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


@lru_cache(maxsize=64)
def nominal_level(alpha: float, looks: int) -> float:
    """The one-look level whose constant boundary keeps pure noise with probability alpha.

    A Pocock-type boundary computed by simulation (fixed seed, so the same everywhere) of
    the test with a known sd: at look k >= 2, z_k = (mean of k candidate draws - mean of
    k - 1 incumbent draws) / sqrt(1/k + 1/(k-1)); the futility stops from look 2 on are
    binding (they are always applied); the screen is left out (a stale reference could
    let anything through it), which only makes the bound conservative. The margin covers
    the simulation's own error; the t quantile at this level covers the estimated sd.
    """
    import numpy as np

    sims = max(20_000, 2_400_000 // looks)
    rng = np.random.default_rng(20261201)
    k = np.arange(1, looks + 1)
    candidate = np.cumsum(rng.standard_normal((sims, looks)), axis=1) / k
    fresh = np.cumsum(rng.standard_normal((sims, looks)), axis=1) / k
    z = np.full((sims, looks), -np.inf)
    z[:, 1:] = (candidate[:, 1:] - fresh[:, :-1]) / np.sqrt(1 / k[1:] + 1 / k[:-1])
    alive = np.ones(sims, dtype=bool)
    best = np.full(sims, -np.inf)
    for j in range(looks):
        if j + 1 >= MIN_KEEP_N:
            best = np.where(alive, np.maximum(best, z[:, j]), best)
        if j >= 1:  # the screen (look 1) is left out: a stale reference may pass anything
            alive &= z[:, j] >= FUTILITY_T + FUTILITY_STEP * j
    # the order statistic two binomial sds beyond alpha's: a boundary the truth lies under
    expected = alpha * sims
    rank = max(int(expected - 2 * math.sqrt(expected)), 1)
    z_bound = float(np.sort(best)[-rank])
    from scipy.special import ndtr

    return float(1 - ndtr(z_bound))


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
class _Group:
    """One commit's repeated measurements, centred sums kept current (see NoiseModel)."""

    values: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    ss: float = 0.0  # sum of squares of the values about their mean
    stt: float = 0.0  # ... of the times about theirs
    sty: float = 0.0  # cross products

    def add(self, value: float, at: float) -> None:
        self.values.append(value)
        self.times.append(at)
        y, t = _mean(self.values), _mean(self.times)
        self.stt = sum((u - t) ** 2 for u in self.times)
        if max(self.values) == min(self.values):  # exactly: a mean can round off
            self.ss = self.sty = 0.0
            return
        self.ss = sum((v - y) ** 2 for v in self.values)
        self.sty = sum((u - t) * (v - y) for u, v in zip(self.times, self.values, strict=True))


@dataclass
class NoiseModel:
    """Repeated measurements of the same commit, pooled within commits, with a common trend.

    The model: a measurement is its commit's level + slope x time + noise, with time the
    `clock` (a count of measurements). Pooling within commits gives the sd of one
    measurement and the slope (a drift of the machine, say), both independent of every
    commit's mean; `compare` uses them to set the incumbent's level at the candidate's time.

    Only measurements whose inclusion did not depend on their own value belong here
    (an incumbent's, never a candidate's: a candidate is re-measured after a good draw).
    A value on a seed its group already has is not a new draw and is left out. Totals
    are kept up to date, so an estimate costs the same after 100,000 experiments.
    """

    clock: float = 0.0
    _groups: dict[str, _Group] = field(default_factory=dict)
    _seeds: dict[str, set[int]] = field(default_factory=dict)
    _ss: float = 0.0
    _stt: float = 0.0
    _sty: float = 0.0
    _df: int = 0

    def tick(self) -> float:
        """The time of a measurement taken now (every measurement should take one)."""
        self.clock += 1
        return self.clock

    @property
    def groups(self) -> dict[str, list[float]]:
        return {key: group.values for key, group in self._groups.items()}

    def add(self, key: str, value: float, seed: int | None = None, at: float | None = None) -> bool:
        """Add a value measured at `at` (by default now); False on a seed seen before."""
        at = self.tick() if at is None else at
        if seed is not None:
            seeds = self._seeds.setdefault(key, set())
            if seed in seeds:
                return False
            seeds.add(seed)
        group = self._groups.setdefault(key, _Group())
        self._ss -= group.ss
        self._stt -= group.stt
        self._sty -= group.sty
        group.add(value, at)
        self._ss += group.ss
        self._stt += group.stt
        self._sty += group.sty
        self._df += 1 if len(group.values) > 1 else 0
        return True

    def samples(self, key: str) -> Samples:
        group = self._groups.get(key)
        return Samples(tuple(group.values if group else ()))

    def centroid(self, key: str) -> float:
        """The mean time of a commit's measurements."""
        return _mean(self._groups[key].times)

    @property
    def trend(self) -> tuple[float, float]:
        """The common slope per unit of time, and the times' pooled sum of squares."""
        if self._stt <= 0:
            return 0.0, 0.0
        return self._sty / self._stt, self._stt

    @property
    def estimate(self) -> Noise:
        """The sd about each commit's level, and about the trend once it is affordable: a
        drift then no longer inflates the sd (the trend costs one df)."""
        df, ss = self._df, max(self._ss, 0.0)
        if df == 0:
            return Noise(None, 0)
        if df >= TREND_MIN_DF and self._stt > 0:
            df, ss = df - 1, max(ss - self._sty**2 / self._stt, 0.0)
        return Noise(math.sqrt(ss / df), df)


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
        """A look after each of the candidate's measurements."""
        return self.max_measurements

    def boundary(self, df: int) -> float:
        """The t a look must reach: the same at every look, alpha spent over all of them."""
        return t_quantile(1 - nominal_level(self.alpha, self.max_measurements), df)

    def futility(self, look: int) -> float:
        return FUTILITY_T + FUTILITY_STEP * (look - 1)

    def smallest_detectable(self, noise: Noise) -> float:
        """The improvement that, measured exactly, would just be kept at the last look."""
        if noise.sd is None:
            return math.inf
        k = self.max_measurements  # against k - 1 interleaved measurements of the incumbent
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
    first_at = noise.tick()
    estimate = noise.estimate
    if estimate.deterministic:
        return _deterministic(policy, noise, incumbent, goal, metric, first, old, confirm)
    if estimate.sd is None:  # an incumbent measured once (a resumed greedy run, say)
        again = measure_incumbent(1)
        if again is None:
            return None
        noise.add(incumbent, again, 1 if paired else None)
        if noise.estimate.deterministic:
            return _deterministic(policy, noise, incumbent, goal, metric, first, old,
                                  confirm)  # fmt: skip
    if noise.estimate.sd is None:  # paired, and seed 1 was no new draw
        return Judgement("discard", f"discarded: {change}: the noise is not yet known "
                         "(the incumbent has one measurement)", (first,), reference=old)  # fmt: skip
    return _sequential(policy, noise, incumbent, goal, metric, first, first_at, old,
                       measure_candidate, measure_incumbent, confirm, paired)  # fmt: skip


@dataclass(frozen=True)
class Look:
    """The candidate against the incumbent's level at the candidate's mean time."""

    delta: float  # the improvement, trend-adjusted
    se: float  # of delta
    incumbent: float  # the incumbent's level at the candidate's mean time
    n: int  # the incumbent's measurements behind it
    shift: float  # the trend's adjustment of the incumbent's level

    @property
    def t(self) -> float:
        if self.se > 0:
            return self.delta / self.se
        return math.inf if self.delta > 0 else -math.inf if self.delta < 0 else 0.0


def _look(noise: NoiseModel, theirs: list[float], theirs_at: list[float],
                mine: list[float], mine_at: list[float], goal: Goal) -> Look:  # fmt: skip
    """The candidate against the incumbent's measurements taken interleaved with it."""
    sd = noise.estimate.sd
    assert sd is not None
    slope, stt = noise.trend
    gap = _mean(mine_at) - _mean(theirs_at)
    shift = slope * gap
    level = _mean(theirs) + shift
    own = statistics.stdev(mine) if len(mine) >= OWN_SPREAD_N else 0.0
    variance = (max(sd, own) ** 2 / len(mine)
                + sd**2 * (1 / len(theirs) + (gap**2 / stt if stt > 0 else 0.0)))  # fmt: skip
    delta = improvement(_mean(mine), level, goal)
    return Look(delta, math.sqrt(variance), level, len(theirs), shift)


def _screen(noise: NoiseModel, incumbent: str, first: float, goal: Goal) -> Look:
    """The first measurement against the incumbent's latest ones: a futility stop only."""
    sd = noise.estimate.sd
    assert sd is not None
    recent = noise.samples(incumbent).values[-SCREEN_WINDOW:]
    level = _mean(recent)
    return Look(improvement(first, level, goal), sd * math.sqrt(1 + 1 / len(recent)), level,
                len(recent), 0.0)  # fmt: skip


def _sequential(
    policy: NoiseAware,
    noise: NoiseModel,
    incumbent: str,
    goal: Goal,
    metric: str,
    first: float,
    first_at: float,
    old: float,
    measure_candidate: Measure,
    measure_incumbent: Measure,
    confirm: Measure,
    paired: bool,
) -> Judgement | None:
    """C (screen) I C I C ...: a look after each candidate measurement."""
    mine, mine_at, theirs, theirs_at = [first], [first_at], list[float](), list[float]()
    for k in range(1, policy.max_measurements + 1):
        if k > 1:
            # with paired seeds the incumbent's k-th runs on the candidate's k-th seed; a
            # seed it had before is no new draw for the noise (`add` leaves it out)
            fresh = measure_incumbent(k - 2)
            if fresh is None:
                return None
            theirs_at.append(noise.tick())
            theirs.append(fresh)
            noise.add(incumbent, fresh, (k - 2) if paired else None, theirs_at[-1])
            value = measure_candidate(k - 1)
            if value is None:
                return None
            mine.append(value)
            mine_at.append(noise.tick())
        estimate = noise.estimate
        assert estimate.sd is not None
        if theirs:
            look = _look(noise, theirs, theirs_at, mine, mine_at, goal)
        else:
            look = _screen(noise, incumbent, first, goal)
        bound = policy.boundary(estimate.df)
        trend = f", trend {look.shift:+.3g}" if look.shift else ""
        against = (f"{look.n} interleaved{trend}" if theirs else
                   f"the incumbent's latest {look.n}")  # fmt: skip
        facts = (f"t = delta {look.delta:.4g} / se {look.se:.3g} = {look.t:.2f}; n={len(mine)} vs "
                 f"{against}; sd {estimate.sd:.3g} of one measurement, {estimate.df} df")  # fmt: skip
        change = f"{metric} {_fmt(look.incumbent)} -> {_fmt(_mean(mine))}"
        if look.t >= bound and len(mine) >= MIN_KEEP_N:
            if look.delta <= policy.min_delta:
                why = (f"discarded: {change} is significant ({facts}; t >= {bound:.2f}) but "
                       f"delta {look.delta:.4g} is not above min_delta {policy.min_delta:g}")  # fmt: skip
                return Judgement("discard", why, tuple(mine), tuple(theirs), reference=old)
            return _confirm(f"kept: {change} ({facts}; t >= {bound:.2f}, look {k} of "
                            f"{policy.looks} at alpha {policy.alpha:g})", mine, theirs, old,
                            confirm)  # fmt: skip
        new = not theirs and noise.samples(incumbent).n < SCREEN_MIN_N  # no screen then
        futile = look.t < policy.futility(k) and not new
        if futile or k == policy.max_measurements:
            what = "screen" if not theirs else "futility"
            reason = (f"t < {policy.futility(k):.2f}, {what} at look {k}" if futile else
                      f"t < {bound:.2f} at the last look")  # fmt: skip
            why = f"discarded: {change} ({facts}; {reason})"
            return Judgement("discard", why, tuple(mine), tuple(theirs), reference=old)
    raise AssertionError("max_measurements is at least 1")


def _confirm(
    why: str, mine: list[float], theirs: list[float], old: float, confirm: Measure
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
    n = sum(len(values) for values in noise.groups.values())  # the repeats behind the claim
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
