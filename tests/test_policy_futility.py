"""Futility on the incumbent's latest measurements, keeps on the interleaved ones only.

The screen and the futility stops compare the candidate with the incumbent's latest
measurements (fresh ones included), which is precise but may be stale; a keep rests on
the interleaved measurements alone. So a stale reference (a step in the machine's speed)
can cost measurements but not a false keep, and the boundary is computed as if the
futility stops never applied. Fixed seeds: deterministic.
"""

from __future__ import annotations

import math
import random

import numpy as np
from scipy.special import ndtri

from ratchet.policy import MIN_KEEP_N, NoiseAware, NoiseModel, compare, nominal_level


def stepped_trial(rng: random.Random, policy: NoiseAware, step: float) -> tuple[str, int]:
    """A null candidate right after a favourable step of `step` sd (minimize): the
    incumbent's 6 earlier measurements are `step` worse than anything measured now. The sd
    is known from 30 measurements of another commit. (verdict, measurements taken)"""
    noise = NoiseModel()
    for _ in range(30):
        noise.add("other", rng.gauss(0, 1))
    for _ in range(6):
        noise.add("incumbent", step + rng.gauss(0, 1))
    taken = [0]

    def measure(k: int) -> float:
        taken[0] += 1
        return rng.gauss(0, 1)

    judgement = compare(policy, noise, "incumbent", "minimize", "loss", measure, measure)
    assert judgement is not None
    return judgement.verdict, taken[0]


def test_a_step_before_a_null_candidate_keeps_it_no_more_often_than_alpha() -> None:
    policy, trials = NoiseAware(confidence=0.95), 2000  # alpha 0.05: visible counts
    allowed = trials * policy.alpha + 3 * math.sqrt(trials * policy.alpha * policy.confidence)
    for step in (1.5, 5.0):
        rng = random.Random(7)
        results = [stepped_trial(rng, policy, step) for _ in range(trials)]
        keeps = sum(verdict == "keep" for verdict, _ in results)
        assert keeps <= allowed, (step, keeps)
        # the stale reference let the nulls through the screen: the step costs measurements
        assert sum(n for _, n in results) / trials > 3


def test_the_boundary_spends_alpha_when_futility_never_stops_a_null() -> None:
    """The worst case the bound covers: every null reaches the last look unless it crosses
    (a stale reference stops none). An independent simulation of the interleaved z at the
    computed boundary crosses with probability alpha, within the two simulations' errors."""
    policy = NoiseAware()
    looks, alpha, sims = policy.max_measurements, policy.alpha, 200_000
    z_bound = float(ndtri(1 - nominal_level(alpha, looks)))
    rng = np.random.default_rng(4242)
    k = np.arange(1, looks + 1)
    candidate = np.cumsum(rng.standard_normal((sims, looks)), axis=1) / k
    incumbent = np.cumsum(rng.standard_normal((sims, looks)), axis=1) / k
    z = (candidate[:, 1:] - incumbent[:, :-1]) / np.sqrt(1 / k[1:] + 1 / k[:-1])
    crossed = float(np.mean(np.max(z[:, MIN_KEEP_N - 2 :], axis=1) >= z_bound))
    spread = 3 * math.sqrt(alpha * (1 - alpha) / sims)
    margin = 2 * math.sqrt(alpha / (2_400_000 // looks))  # the boundary's own, below alpha
    assert alpha - margin - spread <= crossed <= alpha + spread


def test_an_unlucky_fresh_incumbent_draw_does_not_stop_a_real_improvement() -> None:
    """A 3 sd better candidate whose one interleaved incumbent measurement happened to be
    as good as it: against that alone (t < 0) the futility line would end it at look 2;
    against the incumbent's latest six it is well ahead, so the test goes on."""
    noise = NoiseModel()
    for value in (-1.0, 1.0) * 15:  # sd 1 from another commit
        noise.add("other", value)
    for value in (10.0, 10.4, 9.6, 10.2, 9.8, 10.0):
        noise.add("incumbent", value)
    candidate = iter([7.0, 8.4, 7.2, 6.8, 7.1, 7.0, 6.9])
    incumbent = iter([7.6, 10.1, 9.9, 10.0, 10.2])
    judgement = compare(NoiseAware(), noise, "incumbent", "minimize", "loss",
                        lambda k: next(candidate), lambda k: next(incumbent))  # fmt: skip
    assert judgement is not None
    assert len(judgement.candidate) >= 3, judgement.why
    assert judgement.verdict == "keep", judgement.why
    assert "interleaved" in judgement.why and "t >= " in judgement.why
