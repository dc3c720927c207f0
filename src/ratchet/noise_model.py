"""The noise model: repeated measurements of a commit, pooled within commits, with a trend.

`policy.compare` reads the sd of one measurement (with its degrees of freedom) and the
common trend from here; only measurements not selected on their value are added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TREND_MIN_DF = 10  # the trend is taken out of the sd from this many degrees of freedom


def average(values: list[float] | tuple[float, ...]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class Samples:
    """Measured values of one commit's metric."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return average(self.values)

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
        y, t = average(self.values), average(self.times)
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
        return average(self._groups[key].times)

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


def noise_from_rows(
    rows: list[tuple[int, str, float, int]], baseline: int | None, paired: bool
) -> NoiseModel:
    """A run's noise model rebuilt from its journal: the same measurements that built it.

    `rows` are (experiment, status, value, seed), oldest first. In: the baseline's, and a
    kept candidate's from its first confirmation on (it is then an incumbent; those
    before decided the keep, selected on their value). Every row takes its time.
    """
    model, confirmed = NoiseModel(), set[int]()
    for experiment, status, value, seed in rows:
        at = model.tick()
        if status == "confirm":
            confirmed.add(experiment)
        if status in ("ok", "confirm") and (experiment == baseline or experiment in confirmed):
            model.add(str(experiment), value, seed if paired else None, at)
    return model
