"""The sequential test's guarantees, checked by simulation (fixed seeds, so deterministic).

These feed `compare` simulated measurements of known truth: the false-keep rate per trial
must stay under the configured alpha across all looks, the noise estimate must not be
inflated by the candidates' lucky draws, and a keep's recorded improvement must not carry
the winner's curse.
"""

from __future__ import annotations

import math
import random

from ratchet.policy import Judgement, NoiseAware, NoiseModel, compare


def trial(noise: NoiseModel, rng: random.Random, effect: float, drift: list[float],
          policy: NoiseAware) -> Judgement:  # fmt: skip
    """One candidate against the incumbent (true value 0; minimize), with a trend."""

    def measure(truth: float) -> float:
        drift[0] += drift[1]
        return truth - drift[0] + rng.gauss(0, 1)

    judgement = compare(policy, noise, "incumbent", "minimize", "loss",
                        lambda k: measure(-effect), lambda k: measure(0.0))  # fmt: skip
    assert judgement is not None
    return judgement


def known_noise(rng: random.Random, n: int = 31) -> NoiseModel:
    noise = NoiseModel()
    for _ in range(n):
        noise.add("incumbent", rng.gauss(0, 1))
    return noise


def test_false_keeps_stay_under_alpha_across_all_looks() -> None:
    rng, policy = random.Random(11), NoiseAware(confidence=0.95)  # alpha 0.05: visible counts
    trials = 4000
    keeps = 0
    for _ in range(trials):
        noise = known_noise(rng)
        keeps += trial(noise, rng, 0.0, [0.0, 0.0], policy).verdict == "keep"
    # the bound is alpha = 0.05 per trial (200 of 4000), whatever look crosses, with three
    # binomial sds for the simulation's own spread. Here the screen and the futility
    # stops end most nulls early, so far fewer are kept; test_policy_step.py shows that
    # the boundary spends the whole of alpha when a stale reference lets every null on.
    assert keeps <= trials * policy.alpha + 3 * math.sqrt(trials * policy.alpha * policy.confidence)


def test_a_favourable_trend_does_not_make_false_keeps() -> None:
    """0.05 sd per measurement: the incumbent's reference is 1.5 sd stale, but the test
    compares interleaved measurements, whose time centroids coincide."""
    rng, policy = random.Random(5), NoiseAware()
    keeps = 0
    for _ in range(1500):
        noise = known_noise(rng)
        keeps += trial(noise, rng, 0.0, [1.5, 0.05], policy).verdict == "keep"
    assert keeps <= 1500 * policy.alpha


def test_the_noise_estimate_is_not_inflated_by_selection() -> None:
    rng, policy = random.Random(3), NoiseAware()
    noise = known_noise(rng, 3)
    for _ in range(600):
        trial(noise, rng, 0.0, [0.0, 0.0], policy)
    estimate = noise.estimate
    assert estimate.sd is not None and estimate.df > 30
    assert 0.85 < estimate.sd < 1.15  # the true sd is 1; the old estimate was 1.25 to 1.44


def test_real_effects_are_kept_and_recorded_without_the_winners_curse() -> None:
    rng, policy = random.Random(7), NoiseAware()
    kept, recorded = 0, []
    for _ in range(400):
        judgement = trial(known_noise(rng), rng, 2.0, [0.0, 0.0], policy)
        if judgement.verdict == "keep":
            kept += 1
            assert judgement.reference is not None and judgement.value is not None
            recorded.append(judgement.reference - judgement.value)
    assert kept > 200  # a 2 sd improvement, against a well-measured incumbent
    # recorded at fresh measurements: on average the true 2.0, not the winning draws' 2.5+
    assert abs(sum(recorded) / len(recorded) - 2.0) < 0.2


def test_a_deterministic_metric_that_turns_out_noisy_keeps_nothing() -> None:
    noise = NoiseModel()
    for _ in range(3):
        noise.add("incumbent", 5.0)
    values = iter([4.0, 4.5])  # better at first, then not the same when confirmed
    judgement = compare(NoiseAware(), noise, "incumbent", "minimize", "loss",
                        lambda k: next(values), lambda k: 5.0)  # fmt: skip
    assert judgement is not None and judgement.verdict == "discard"
    assert "not deterministic" in judgement.why
    assert noise.estimate.sd is not None and noise.estimate.sd > 0


def test_one_outlier_cannot_carry_a_keep() -> None:
    """A 6 sd lucky draw first, then draws like the incumbent's: the candidate's own spread
    widens its se, and no keep rests on one measurement."""
    rng = random.Random(2)
    noise = known_noise(rng)
    candidate = iter([-6.0, 0.1, -0.2, 0.3, -0.1, 0.0, 0.2])
    incumbent = iter([0.1, -0.1, 0.0, 0.2, -0.2, 0.1])
    judgement = compare(NoiseAware(), noise, "incumbent", "minimize", "loss",
                        lambda k: next(candidate), lambda k: next(incumbent))  # fmt: skip
    assert judgement is not None and judgement.verdict == "discard", judgement
    assert len(judgement.candidate) >= 3  # it was tested, not screened out
    assert "futility" in judgement.why or "last look" in judgement.why


def test_the_noise_model_takes_a_trend_out_of_the_sd() -> None:
    """Commits measured over time under a drift of 0.05 sd per measurement: the pooled
    slope finds the drift, and the sd is that of the noise, not inflated by the drift."""
    rng, noise = random.Random(4), NoiseModel()
    for _ in range(6):  # each commit measured again and again, in turn, as incumbents are
        for commit in range(8):
            noise.add(str(commit), -0.05 * noise.clock + rng.gauss(0, 1))
    slope, _ = noise.trend
    assert abs(slope + 0.05) < 0.02
    estimate = noise.estimate
    assert estimate.df == 8 * 5 - 1 and estimate.sd is not None
    assert 0.8 < estimate.sd < 1.2
    naive = NoiseModel()  # the same values without their times: the drift counts as noise
    for key, values in noise.groups.items():
        for value in values:
            naive.add(key, value, at=0.0)
    assert naive.estimate.sd is not None and naive.estimate.sd > estimate.sd


def test_the_boundary_is_below_bonferronis_and_grows_with_the_looks() -> None:
    from scipy.special import ndtri

    default = NoiseAware()
    z = default.boundary(0)  # df 0: the normal's
    assert z < float(ndtri(1 - default.alpha / (default.max_measurements - 1)))
    assert z > float(ndtri(1 - default.alpha))  # more than one look costs something
    assert (
        NoiseAware(max_measurements=3).boundary(0) < z < NoiseAware(max_measurements=12).boundary(0)
    )
    assert default.boundary(5) > default.boundary(50) > z  # a young estimate is conservative
