"""False keeps, power and cost: the real `compare` loop driven by simulated measurements.

Each run is a baseline (measured BASELINE_REPEATS times, as `ratchet run` does, or more
after `ratchet noise`) then 60 trials. A measurement is the commit's true value plus
noise of sd 1 (Gaussian, Student-t(3) scaled to sd 1, or Gaussian with 5% outliers at
+-5), minus DRIFT per measurement taken so far (a favourable trend). A share of the
candidates is truly better than its parent by EFFECT sd; the rest change nothing, so
their keeps are false keeps.

    python bench/noise.py [--runs 1000] [--trials 60] [--seed 0] [--json PATH]
                          [--max-repeats 10] [--screen 0.8] [--futility-step 0.25]

Measurements per trial count every measurement: the baseline's, the candidates', the
incumbent's interleaved ones and each keep's confirmation.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ratchet import policy as ratchet_policy
from ratchet.engine import BASELINE_REPEATS
from ratchet.policy import Greedy, NoiseAware, NoiseModel, compare

RUNS = 1000
TRIALS = 60


@dataclass(frozen=True)
class Scenario:
    name: str
    share: float = 0.0  # of candidates with a real effect
    effect: float = 0.0  # in sd of one measurement
    tails: str = "gauss"  # gauss, t3, outliers
    drift: float = 0.0  # favourable, per measurement
    repeats: int = BASELINE_REPEATS  # of the baseline (30: after `ratchet noise --repeats 30`)
    step: float = 0.0  # a favourable shift of the metric just before some null candidates


SCENARIOS = [
    Scenario("pure noise"),
    Scenario("pure noise after ratchet noise", repeats=30),
    Scenario("Student-t(3) tails", tails="t3"),
    Scenario("5% outliers at 5 sd", tails="outliers"),
    Scenario("drift 0.05 sd/measurement", drift=0.05),
    Scenario("30% +3 sd", share=0.3, effect=3.0),
    Scenario("30% +1 sd", share=0.3, effect=1.0),
    Scenario("step of 1.5 sd before a null", step=1.5),
]
STEP_EVERY = 6  # trials: a step comes before every 6th candidate (all nulls there)
PHASES = ("baseline", "screen", "candidate at looks", "incumbent at looks", "confirmation")


def draw(rng: random.Random, tails: str) -> float:
    if tails == "t3":  # Student-t(3) has variance 3
        z, chi = rng.gauss(0, 1), sum(rng.gauss(0, 1) ** 2 for _ in range(3))
        return z / math.sqrt(chi / 3) / math.sqrt(3)
    if tails == "outliers" and rng.random() < 0.05:
        return rng.choice((-5.0, 5.0))
    return rng.gauss(0, 1)


@dataclass
class RunResult:
    false_keeps: int = 0
    real: int = 0
    real_keeps: int = 0
    measurements: int = 0
    recorded: float = 0.0  # sum of recorded improvements of real keeps
    true: float = 0.0  # sum of their true improvements
    stepped: int = 0  # null candidates right after a step
    stepped_keeps: int = 0  # ... kept
    # measurements by (trial class, phase), and trials by class; a class is "null" or
    # "real", with " after a keep" while the incumbent has fewer than 3 measurements
    cost: Counter[tuple[str, str]] = field(default_factory=Counter)
    trials: Counter[str] = field(default_factory=Counter)


def simulate_run(policy: Greedy | NoiseAware, s: Scenario, trials: int,
                 rng: random.Random) -> RunResult:  # fmt: skip
    noise, result = NoiseModel(), RunResult()
    truth = {"c0": 0.0}  # minimize: lower is better
    shift = 0.0  # the steps so far: the machine got faster
    where = ["", "baseline"]  # the trial's class and the phase being measured

    def measure(key: str, phase: str | None = None) -> float:
        result.measurements += 1
        result.cost[where[0], phase or where[1]] += 1
        return truth[key] - s.drift * result.measurements - shift + draw(rng, s.tails)

    repeats = s.repeats if policy.max_measurements > 1 else 1
    for _ in range(repeats):
        noise.add("c0", measure("c0"))
    incumbent = "c0"
    for trial in range(1, trials + 1):
        candidate, real = f"c{trial}", rng.random() < s.share
        stepped = s.step > 0 and trial % STEP_EVERY == 0
        if stepped:
            real, shift = False, shift + s.step
            result.stepped += 1
        truth[candidate] = truth[incumbent] - (s.effect if real else 0.0)
        result.real += real
        where[0] = ("real" if real else "null") + (
            " after a keep" if noise.samples(incumbent).n < 3 else "")  # fmt: skip
        result.trials[where[0]] += 1

        def candidate_measure(k: int, c: str = candidate) -> float:
            return measure(c, "screen" if k == 0 else "candidate at looks")

        judgement = compare(policy, noise, incumbent, "minimize", "loss", candidate_measure,
                            lambda k, i=incumbent: measure(i, "incumbent at looks"),
                            measure_confirmation=lambda k, c=candidate: measure(c, "confirmation"))  # fmt: skip
        if judgement is None or judgement.verdict != "keep":
            continue
        result.stepped_keeps += stepped
        if real:
            result.real_keeps += 1
            assert judgement.reference is not None and judgement.value is not None
            result.recorded += judgement.reference - judgement.value
            result.true += s.effect
        else:
            result.false_keeps += 1
        for value in judgement.confirmed or judgement.candidate:
            noise.add(candidate, value)
        incumbent = candidate
    return result


def simulate(policy: Greedy | NoiseAware, effect: float, trials: int,
             rng: random.Random) -> tuple[int, int]:  # fmt: skip
    """Every candidate better by `effect` (0: pure noise). One run: (keeps, measurements)."""
    r = simulate_run(policy, Scenario("", 1.0 if effect else 0.0, effect), trials, rng)
    return r.false_keeps + r.real_keeps, r.measurements


def ci(values: list[float]) -> str:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {1.96 * se:.2f}"


def summarize(runs: list[RunResult], trials: int) -> dict[str, float]:
    per60 = [r.false_keeps * TRIALS / trials for r in runs]
    real = sum(r.real for r in runs)
    recorded, true = sum(r.recorded for r in runs), sum(r.true for r in runs)
    return {
        "false_keeps_per_60": statistics.fmean(per60),
        "false_keeps_ci95": 1.96 * statistics.stdev(per60) / math.sqrt(len(runs)),
        "runs_with_a_false_keep": sum(r.false_keeps > 0 for r in runs) / len(runs),
        "real_keep_rate": sum(r.real_keeps for r in runs) / real if real else math.nan,
        "measurements_per_trial": sum(r.measurements for r in runs) / len(runs) / trials,
        "recorded_over_true": recorded / true if true else math.nan,
        "step_false_keep_rate": (sum(r.stepped_keeps for r in runs) / stepped
                                 if (stepped := sum(r.stepped for r in runs)) else math.nan),
    }  # fmt: skip


def breakdown(runs: list[RunResult], trials: int) -> dict[str, dict[str, float]]:
    """Measurements per trial of each class, by phase, and the classes' share of trials."""
    cost: Counter[tuple[str, str]] = sum((r.cost for r in runs), Counter())
    count: Counter[str] = sum((r.trials for r in runs), Counter())
    table: dict[str, dict[str, float]] = {}
    for kind, n in sorted(count.items()):
        row = {phase: cost[kind, phase] / n for phase in PHASES[1:]}
        row["all"] = sum(row.values())
        row["share of trials"] = n / (len(runs) * trials)
        table[kind] = row
    table["baseline"] = {"all": cost["", "baseline"] / (len(runs) * trials)}
    return table


def print_breakdown(table: dict[str, dict[str, float]]) -> None:
    print(f"    {'trial class':<20} {'share':>6} " + " ".join(f"{p:>10.10}" for p in PHASES[1:])
          + f" {'all':>6}")  # fmt: skip
    for kind, row in table.items():
        if kind == "baseline":
            print(f"    {'baseline':<20} {'':>6} {row['all']:>62.2f} per trial")
            continue
        print(f"    {kind:<20} {row['share of trials']:>6.1%} "
              + " ".join(f"{row[p]:>10.2f}" for p in PHASES[1:]) + f" {row['all']:>6.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--policy", choices=["greedy", "noise-aware"], help="only this one")
    parser.add_argument("--confidence", type=float, default=NoiseAware().confidence)
    parser.add_argument("--only", help="only the conditions whose name contains this")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print where the measurements go, by trial class and phase")  # fmt: skip
    # what-if: the designs BENCHMARKS.md compares (the defaults are ratchet's own)
    parser.add_argument("--max-repeats", type=int, default=NoiseAware().max_measurements)
    parser.add_argument("--screen", type=float, default=ratchet_policy.FUTILITY_T,
                        help="the futility line at look 1 (the screen)")  # fmt: skip
    parser.add_argument("--futility-step", type=float, default=ratchet_policy.FUTILITY_STEP,
                        help="how much the futility line rises at each later look")  # fmt: skip
    args = parser.parse_args()
    ratchet_policy.FUTILITY_T, ratchet_policy.FUTILITY_STEP = args.screen, args.futility_step
    began = time.perf_counter()
    policies: dict[str, Greedy | NoiseAware] = {
        "greedy": Greedy(),
        "noise-aware": NoiseAware(args.confidence, max_measurements=args.max_repeats),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{args.runs} simulated runs of {args.trials} trials; noise of sd 1 per measurement")
    print(f"{'policy':<12} {'scenario':<32} {'false/60':>8} {'±95%':>6} {'runs w/':>7} "
          f"{'real kept':>9} {'meas/trial':>10} {'rec/true':>8} {'step kept':>9}")  # fmt: skip
    for name, policy in policies.items():
        if args.policy and name != args.policy:
            continue
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario.name:
                continue
            rng = random.Random(args.seed)
            runs = [simulate_run(policy, scenario, args.trials, rng) for _ in range(args.runs)]
            row = summarize(runs, args.trials)
            results.setdefault(name, {})[scenario.name] = row
            print(f"{name:<12} {scenario.name:<32} {row['false_keeps_per_60']:>8.2f} "
                  f"{row['false_keeps_ci95']:>6.2f} {row['runs_with_a_false_keep']:>7.0%} "
                  f"{row['real_keep_rate']:>9.1%} {row['measurements_per_trial']:>10.2f} "
                  f"{row['recorded_over_true']:>8.2f} {row['step_false_keep_rate']:>9.2%}",
                  flush=True)  # fmt: skip
            if args.breakdown and name != "greedy":
                table = breakdown(runs, args.trials)
                row["breakdown"] = table  # type: ignore[assignment]
                print_breakdown(table)
    print(f"bench took {time.perf_counter() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "trials": args.trials,
                                         "results": results}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
