"""Deciding keep or discard from measurements, and the noise model behind it.

A policy sees the candidate's and the incumbent's samples of the metric and the current
noise estimate, and returns a verdict with a sentence of why. `measure-again` asks for
another sample of the candidate before it commits to an answer.

`compare` is the one loop that turns measurements into a verdict; the engine drives it
with real measurements and `bench/noise.py` with simulated ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal, Protocol

Goal = Literal["minimize", "maximize"]
Verdict = Literal["keep", "discard", "measure-again"]

FUTILITY_Z = 0.8  # below this after a measurement, a candidate is not worth another one


@dataclass(frozen=True)
class Samples:
    """Every measured value of one commit's metric."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Noise:
    """The standard deviation of one measurement, pooled over repeated measurements."""

    sd: float | None  # None until some commit has been measured twice
    df: int  # degrees of freedom behind the estimate


@dataclass
class NoiseModel:
    """Repeated measurements of the same commit, pooled: sums of squares within groups.

    Totals are kept up to date as samples arrive, so an estimate costs the same after
    a hundred thousand experiments as after ten.
    """

    groups: dict[str, list[float]] = field(default_factory=dict)
    _ss: dict[str, float] = field(default_factory=dict)
    _total_ss: float = 0.0
    _total_df: int = 0

    def add(self, key: str, value: float) -> None:
        values = self.groups.setdefault(key, [])
        values.append(value)
        mean = sum(values) / len(values)
        ss = sum((v - mean) ** 2 for v in values)
        self._total_ss += ss - self._ss.get(key, 0.0)
        self._total_df += 1 if len(values) > 1 else 0
        self._ss[key] = ss

    def samples(self, key: str) -> Samples:
        return Samples(tuple(self.groups.get(key, ())))

    def alias(self, new: str, old: str) -> None:
        """A kept candidate's samples are the new incumbent's."""
        if old in self.groups:
            self.groups[new] = self.groups.pop(old)
            self._ss[new] = self._ss.pop(old, 0.0)

    @property
    def estimate(self) -> Noise:
        df = self._total_df
        return Noise(math.sqrt(max(self._total_ss, 0.0) / df) if df else None, df)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    why: str


def improvement(candidate: float, incumbent: float, goal: Goal) -> float:
    """How much better the candidate is; positive means better, whatever the goal."""
    return incumbent - candidate if goal == "minimize" else candidate - incumbent


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher beyond 2 degrees of freedom)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def max_measurements(self) -> int:
        """The most measurements of one candidate."""
        ...

    def judge(
        self, candidate: Samples, incumbent: Samples, noise: Noise, goal: Goal, metric: str
    ) -> Judgement:
        """Keep, discard, or ask for another measurement of the candidate."""
        ...


def _fmt(value: float) -> str:
    return f"{value:.6g}"


class Greedy:
    """Keep only a strict improvement of the mean; a tie is not one."""

    name = "greedy"
    max_measurements = 1

    def judge(
        self, candidate: Samples, incumbent: Samples, noise: Noise, goal: Goal, metric: str
    ) -> Judgement:
        new, old = candidate.mean, incumbent.mean
        delta = improvement(new, old, goal)
        if delta > 0:
            return Judgement("keep", f"{metric} {_fmt(old)} -> {_fmt(new)} (better by {delta:.4g})")
        if delta == 0:
            return Judgement(
                "discard", f"{metric} {_fmt(new)} ties the incumbent; a tie is not a keep"
            )
        return Judgement(
            "discard",
            f"{metric} {_fmt(new)} is worse than the incumbent's {_fmt(old)} by {-delta:.4g}",
        )


@dataclass(frozen=True)
class NoiseAware:
    """A sequential test: keep only an improvement significant at `confidence`.

    After each measurement of the candidate: significant (one-sided Student's t on the
    pooled noise) and above `min_delta` -> keep, once it has been measured at least
    twice, so that no single lucky draw is ever kept; below the futility bound ->
    discard; otherwise measure again, up to `max_measurements`. With zero noise (a
    deterministic metric) it is strict greedy and measures each candidate once.
    The defaults were chosen with `bench/noise.py`.
    """

    confidence: float = 0.99
    min_delta: float = 0.0
    max_measurements: int = 6
    min_keep_measurements: int = 2
    name: str = "noise-aware"

    def threshold(self, df: int) -> float:
        return t_quantile(self.confidence, max(df, 1))

    def smallest_detectable(self, noise: Noise, n_candidate: int, n_incumbent: int) -> float:
        """The improvement that would just be kept with these sample sizes."""
        if noise.sd is None:
            return math.inf
        se = noise.sd * math.sqrt(1 / n_candidate + 1 / n_incumbent)
        return max(self.min_delta, se * self.threshold(noise.df))

    def judge(
        self, candidate: Samples, incumbent: Samples, noise: Noise, goal: Goal, metric: str
    ) -> Judgement:
        new, old = candidate.mean, incumbent.mean
        delta = improvement(new, old, goal)
        stats = f"n={candidate.n} vs {incumbent.n}"
        change = f"{metric} {_fmt(old)} -> {_fmt(new)}"
        if noise.sd is None:
            if candidate.n < self.max_measurements:
                return Judgement("measure-again", "the noise is not known yet")
            return Judgement("discard", f"{change}: the noise could not be estimated ({stats})")
        if noise.sd == 0:
            if delta > self.min_delta:
                return Judgement(
                    "keep", f"kept: {change} (delta {delta:.4g}; the metric is noiseless)"
                )
            if delta == 0:
                return Judgement("discard", f"discarded: {metric} {_fmt(new)} ties the incumbent; "
                                 "a tie is not a keep")  # fmt: skip
            if delta > 0:
                return Judgement("discard", f"discarded: delta {delta:.4g} is not above "
                                 f"min_delta {self.min_delta:g}")  # fmt: skip
            return Judgement("discard", f"discarded: {metric} {_fmt(new)} is worse than the "
                             f"incumbent's {_fmt(old)} by {-delta:.4g}")  # fmt: skip
        se = noise.sd * math.sqrt(1 / candidate.n + 1 / incumbent.n)
        z = delta / se
        sds = f"{delta:.4g} = {z:.1f} sd"
        if z >= self.threshold(noise.df) and delta > self.min_delta:
            if candidate.n < self.min_keep_measurements:
                return Judgement("measure-again", f"delta {sds} looks significant; confirming")
            return Judgement("keep", f"kept: {change} (delta {sds}; {stats})")
        if delta <= self.min_delta and z >= self.threshold(noise.df):
            return Judgement("discard", f"discarded: delta {delta:.4g} is significant but not "
                             f"above min_delta {self.min_delta:g} ({stats})")  # fmt: skip
        if z < FUTILITY_Z or candidate.n >= self.max_measurements:
            if delta <= 0:
                return Judgement(
                    "discard", f"discarded: {change} is not better (delta {sds}; {stats})"
                )
            return Judgement("discard", f"discarded: delta {sds} is within noise ({stats})")
        return Judgement("measure-again", f"delta {sds} is promising but not significant yet")


def policy_for(kind: str, confidence: float = 0.99, min_delta: float = 0.0,
               max_measurements: int = 6) -> Policy:  # fmt: skip
    if kind == "greedy":
        return Greedy()
    return NoiseAware(confidence, min_delta, max_measurements)


def compare(
    policy: Policy,
    noise: NoiseModel,
    candidate: str,
    incumbent: str,
    goal: Goal,
    metric: str,
    measure_candidate: Callable[[], float | None],
    measure_incumbent: Callable[[], float | None],
    paired: bool = False,
) -> Judgement | None:
    """Measure the candidate until the policy decides; None when a measurement failed.

    While a candidate is promising but unproven, the incumbent is re-measured so that it
    never has fewer samples than the candidate: its statistics absorb every
    re-measurement, and a lucky incumbent regresses towards its mean. With `paired`,
    the k-th measurement of every commit runs on seed k, and the candidate is compared
    with the incumbent's measurements on the same seeds.
    """
    while True:
        value = measure_candidate()
        if value is None:
            return None
        noise.add(candidate, value)
        mine, theirs = noise.samples(candidate), noise.samples(incumbent)
        if paired and theirs.n >= mine.n:
            theirs = Samples(theirs.values[: mine.n])
        judgement = policy.judge(mine, theirs, noise.estimate, goal, metric)
        if judgement.verdict != "measure-again":
            return judgement
        if noise.samples(candidate).n >= policy.max_measurements:
            return Judgement("discard", judgement.why + "; no measurements left")
        if noise.samples(incumbent).n <= noise.samples(candidate).n:
            again = measure_incumbent()
            if again is not None:
                noise.add(incumbent, again)
