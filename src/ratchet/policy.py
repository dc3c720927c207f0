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
- futility, at every look (look 1 is the screen): the candidate's mean against the
  incumbent's latest measurements, the fresh ones among them; it can discard, never
  keep, so a stale reference (a drift, a step in the machine's speed) costs
  measurements but cannot pass a null;
- the keep, from look 2: C I C I C ..., the candidate's mean against the incumbent's
  fresh measurements alone, interleaved so that their time centroids coincide and a
  trend cancels; a candidate's own spread, when larger, replaces the pooled sd in its
  se, and no keep rests on one measurement;
- the boundary is the same t quantile at every look, its level computed (by simulating
  this very test) so that pure noise crosses at any look with probability at most
  alpha: a Pocock-type boundary, the futility stops not counted (a stale reference
  may stop none);
- a keep is recorded at fresh confirmation measurements, not at the values that won it.

This module imports only ratchet.noise_model, and numpy and scipy only when a test needs them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

# the noise model lived here; these names are still imported from ratchet.policy
from ratchet.noise_model import Noise as Noise
from ratchet.noise_model import NoiseModel as NoiseModel
from ratchet.noise_model import Samples as Samples
from ratchet.noise_model import average as _mean

Goal = Literal["minimize", "maximize"]
Verdict = Literal["keep", "discard"]

FUTILITY_T = 0.8  # at the first look, a t below this ends the test (always applied)
FUTILITY_STEP = 0.25  # ... and the futility line rises by this at each later look
SCREEN_MIN_N = 3  # no screen against an incumbent measured fewer times (a new one)
SCREEN_WINDOW = 6  # the incumbent's latest measurements, the screen's reference
OWN_SPREAD_N = 3  # from this many measurements a candidate's own spread can widen its se
MIN_KEEP_N = 2  # no keep on one measurement: one outlier must not carry it
CONFIRMATIONS = 1  # fresh measurements of a keep, at which it is recorded
MAX_LOOKS = 10  # the default most measurements of one candidate ([policy] max_repeats)


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
    k - 1 incumbent draws) / sqrt(1/k + 1/(k-1)). The screen and the futility stops are
    left out: they compare with the incumbent's latest measurements, which a step in the
    machine's speed can make stale enough to stop no null, and otherwise they only lower
    the rate. The margin covers the simulation's own error; the t quantile at this level
    covers the estimated sd.
    """
    import numpy as np

    sims = max(20_000, 2_400_000 // looks)
    rng = np.random.default_rng(20261201)
    k = np.arange(1, looks + 1)
    candidate = np.cumsum(rng.standard_normal((sims, looks)), axis=1) / k
    fresh = np.cumsum(rng.standard_normal((sims, looks)), axis=1) / k
    z = np.full((sims, looks), -np.inf)
    z[:, 1:] = (candidate[:, 1:] - fresh[:, :-1]) / np.sqrt(1 / k[1:] + 1 / k[:-1])
    best = np.max(z[:, MIN_KEEP_N - 1 :], axis=1)  # futility is not counted: see above
    # the order statistic two binomial sds beyond alpha's: a boundary the truth lies under
    expected = alpha * sims
    rank = max(int(expected - 2 * math.sqrt(expected)), 1)
    z_bound = float(np.sort(best)[-rank])
    from scipy.special import ndtr

    return float(1 - ndtr(z_bound))


def _fmt(value: float) -> str:
    return f"{value:.6g}"


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
    max_measurements: int = MAX_LOOKS
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
               max_measurements: int = MAX_LOOKS) -> Greedy | NoiseAware:  # fmt: skip
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


def _recent(noise: NoiseModel, incumbent: str, mine: list[float], goal: Goal) -> Look:
    """The candidate's mean against the incumbent's latest measurements (the fresh ones
    among them): for futility only, it can discard, never keep. At look 1 it is the screen.

    No trend correction: an uncertain trend would widen the se, and a wider se makes a
    futility stop more likely, not less; a drift makes this reference stale, which costs
    measurements (in the favourable direction it stops fewer candidates), never a keep.
    """
    sd = noise.estimate.sd
    assert sd is not None
    recent = noise.samples(incumbent).values[-SCREEN_WINDOW:]
    level = _mean(recent)
    own = statistics.stdev(mine) if len(mine) >= OWN_SPREAD_N else 0.0
    se = math.sqrt(max(sd, own) ** 2 / len(mine) + sd**2 / len(recent))
    return Look(improvement(_mean(mine), level, goal), se, level, len(recent), 0.0)


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
        recent = _recent(noise, incumbent, mine, goal)
        look = _look(noise, theirs, theirs_at, mine, mine_at, goal) if theirs else recent
        bound = policy.boundary(estimate.df)
        noise_facts = f"sd {estimate.sd:.3g} of one measurement, {estimate.df} df"
        trend = f", trend {look.shift:+.3g}" if look.shift else ""
        facts = (f"t = delta {look.delta:.4g} / se {look.se:.3g} = {look.t:.2f}; n={len(mine)} vs "
                 f"{look.n} interleaved{trend}; {noise_facts}")  # fmt: skip
        change = f"{metric} {_fmt(look.incumbent)} -> {_fmt(_mean(mine))}"
        if theirs and look.t >= bound and len(mine) >= MIN_KEEP_N:
            if look.delta <= policy.min_delta:
                why = (f"discarded: {change} is significant ({facts}; t >= {bound:.2f}) but "
                       f"delta {look.delta:.4g} is not above min_delta {policy.min_delta:g}")  # fmt: skip
                return Judgement("discard", why, tuple(mine), tuple(theirs), reference=old)
            return _confirm(f"kept: {change} ({facts}; t >= {bound:.2f}, look {k} of "
                            f"{policy.looks} at alpha {policy.alpha:g})", mine, theirs, old,
                            confirm)  # fmt: skip
        new = not theirs and noise.samples(incumbent).n < SCREEN_MIN_N  # no screen then
        futile = recent.t < policy.futility(k) and not new
        if futile:
            # decided on the incumbent's latest measurements, the fresh ones among them
            what = "screen" if not theirs else "futility"
            why = (f"discarded: {metric} {_fmt(recent.incumbent)} -> {_fmt(_mean(mine))} (t = "
                   f"delta {recent.delta:.4g} / se {recent.se:.3g} = {recent.t:.2f}; n={len(mine)}"
                   f" vs the incumbent's latest {recent.n}; {noise_facts}; t < "
                   f"{policy.futility(k):.2f}, {what} at look {k})")  # fmt: skip
            return Judgement("discard", why, tuple(mine), tuple(theirs), reference=old)
        if k == policy.max_measurements:
            why = f"discarded: {change} ({facts}; t < {bound:.2f} at the last look)"
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
