"""A resumed run rebuilds its noise estimate from the journal: the same one it had.

`noise_model.noise_from_rows` takes the journal's measurement rows; these tests drive the
live `compare` loop while writing the rows a journal would hold (the baseline's, the
candidates', the incumbent's interleaved ones, each keep's confirmation), and hold the
rebuilt model equal to the live one, group by group, clock and trend included.
"""

from __future__ import annotations

import random

from ratchet.noise_model import noise_from_rows
from ratchet.policy import NoiseAware, NoiseModel, compare

Row = tuple[int, str, float, int]


def simulated_run(
    seed: int, effect: float, share: float, paired: bool
) -> tuple[NoiseModel, list[Row]]:
    """A run's live noise model, and the journal rows its measurements would leave."""
    rng, live, rows = random.Random(seed), NoiseModel(), list[Row]()
    truth = {0: 0.0}

    def measure(experiment: int, k: int, status: str = "ok") -> float:
        value = truth[experiment] + rng.gauss(0, 1)
        rows.append((experiment, status, value, k))
        return value

    for k in range(3):
        live.add("0", measure(0, k), k if paired else None)
    incumbent = 0
    for experiment in range(1, 41):
        truth[experiment] = truth[incumbent] - (effect if rng.random() < share else 0.0)
        judgement = compare(
            NoiseAware(), live, str(incumbent), "minimize", "loss",
            lambda k, e=experiment: measure(e, k), lambda k, i=incumbent: measure(i, k),
            paired=paired,
            measure_confirmation=lambda k, e=experiment: measure(e, k, "confirm"),
        )  # fmt: skip
        assert judgement is not None
        if judgement.verdict == "keep":
            for value, (_, _, _, k) in zip(judgement.confirmed, rows[-len(judgement.confirmed) :],
                                           strict=True):  # fmt: skip
                live.add(str(experiment), value, k if paired else None)
            incumbent = experiment
    return live, rows


def test_a_resumed_run_rebuilds_the_noise_estimate_it_had() -> None:
    for seed, effect, paired in [(1, 3.0, False), (2, 2.0, False), (4, 3.0, True)]:
        live, rows = simulated_run(seed, effect, 0.3, paired)
        rebuilt = noise_from_rows(rows, 0, paired)
        assert rebuilt.groups == live.groups, seed
        assert rebuilt.estimate == live.estimate, seed
        assert rebuilt.clock == live.clock and rebuilt.trend == live.trend, seed
        assert len(live.groups) > 1, seed  # some candidates were kept: incumbents of their own
        assert sum(status == "confirm" for _, status, _, _ in rows) == len(live.groups) - 1
