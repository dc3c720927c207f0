"""False keeps and their cost: the real policy code driven by simulated measurements.

Each run is a baseline (measured BASELINE_REPEATS times, as `ratchet run` does) then 60
trials. A measurement is the commit's true value plus N(0, 1) noise. In the pure-noise
scenario every candidate is exactly as good as its parent, so every keep is a false
keep; in the others every candidate is truly better than its parent by EFFECT sd.

    python bench/noise.py [--runs 400] [--trials 60] [--seed 0] [--json PATH]

Measurements per trial count every measurement: the baseline's, the candidates', and
the incumbent's re-measurements.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from ratchet.engine import BASELINE_REPEATS
from ratchet.policy import Greedy, NoiseAware, NoiseModel, Policy, compare

RUNS = 400
TRIALS = 60
EFFECTS = [0.0, 1.0, 2.0, 3.0]  # true improvement of every candidate, in sd of one measurement
TARGET_FALSE_KEEPS = 0.3  # per 60 trials, pure noise
TARGET_COST = 1.6  # measurements per trial, pure noise
TARGET_KEEP_RATE_3SD = 0.9


def simulate(policy: Policy, effect: float, trials: int, rng: random.Random) -> tuple[int, int]:
    """One run: (keeps, measurements)."""
    noise = NoiseModel()
    truth = {"c0": 0.0}  # minimize: lower is better
    incumbent, measurements = "c0", 0

    def measure(key: str) -> float:
        nonlocal measurements
        measurements += 1
        return truth[key] + rng.gauss(0.0, 1.0)

    for _ in range(BASELINE_REPEATS if policy.max_measurements > 1 else 1):
        noise.add(incumbent, measure(incumbent))
    keeps = 0
    for trial in range(1, trials + 1):
        candidate = f"c{trial}"
        truth[candidate] = truth[incumbent] - effect
        judgement = compare(policy, noise, candidate, incumbent, "minimize", "loss",
                            lambda c=candidate: measure(c),
                            lambda i=incumbent: measure(i))  # fmt: skip
        if judgement is not None and judgement.verdict == "keep":
            keeps += 1
            incumbent = candidate
    return keeps, measurements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    began = time.perf_counter()
    policies: dict[str, Policy] = {"greedy": Greedy(), "noise-aware": NoiseAware()}
    results: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{args.runs} runs of {args.trials} trials each; noise N(0, 1) per measurement")
    print(f"{'policy':<12} {'effect':>6} {'keeps/run':>10} {'keep rate':>10} {'meas/trial':>11}")
    for name, policy in policies.items():
        for effect in EFFECTS:
            rng = random.Random(args.seed)
            runs = [simulate(policy, effect, args.trials, rng) for _ in range(args.runs)]
            keeps = sum(k for k, _ in runs) / args.runs
            cost = sum(m for _, m in runs) / args.runs / args.trials
            results.setdefault(name, {})[f"{effect:g}sd"] = {
                "keeps_per_run": keeps, "keep_rate": keeps / args.trials, "measurements_per_trial": cost,
            }  # fmt: skip
            print(
                f"{name:<12} {effect:>5g}sd {keeps:>10.2f} {keeps / args.trials:>10.1%} {cost:>11.2f}"
            )
    noisy = results["noise-aware"]
    checks = {
        f"false keeps on pure noise <= {TARGET_FALSE_KEEPS} per {TRIALS} trials":
            noisy["0sd"]["keeps_per_run"] * TRIALS / args.trials <= TARGET_FALSE_KEEPS,
        f"measurements per trial on pure noise <= {TARGET_COST}":
            noisy["0sd"]["measurements_per_trial"] <= TARGET_COST,
        f"keep rate of 3 sd improvements >= {TARGET_KEEP_RATE_3SD:.0%}":
            noisy["3sd"]["keep_rate"] >= TARGET_KEEP_RATE_3SD,
    }  # fmt: skip
    for what, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}: noise-aware {what}")
    print(f"bench took {time.perf_counter() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "trials": args.trials,
                                         "results": results, "pass": checks}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
