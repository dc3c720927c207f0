"""False keeps, power and cost end to end: real `ratchet run`s (noise-aware and greedy) and
labloop 1.0.5 on a metric whose truth and noise this script controls.

Each run is a fresh git repo holding value.py (EFFECT = 0.0, TAG = 0). The proposer is a
`command` that, with probability SHARE, adds EFFECT sd to EFFECT (a real improvement) and
otherwise rewrites TAG, which the metric ignores (a null change). The metric prints
`score: 10 - EFFECT + noise - DRIFT x (measurements so far)`; goal minimize. Its noise has
sd 1: Gaussian, Student-t(3) scaled to sd 1, or Gaussian with 5% outliers at +-5 sd,
seeded from $RATCHET_SEED (labloop sets none: /dev/urandom). Every measurement appends
a line to a tally outside the repo: the cost, and the clock of the drift.

A keep whose diff adds to EFFECT is real, any other keep is false. The recorded
improvement of a real keep is its parent's journal value minus its own (ratchet only).

    python bench/stats_e2e.py [--budget-s 900] [--trials 60] [--jobs 2] [--json PATH]
                              [--conditions NAME,...] [--contenders NAME,...]

Both tools run without a filesystem sandbox (ratchet's `process`, labloop's `none`): the
metric writes its tally outside the repo. Cells (a condition and a contender) are run round-robin until the budget is spent, so
every cell gets about the same number of runs; labloop is installed into a throwaway
venv (`labloop==1.0.5` from the package index) unless --labloop names its executable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import install_labloop

TRIALS = 60

METRIC = r"""
import math, os, random, re, sys
root, tails, drift, salt = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
with open(os.path.join(root, "tally"), "a+") as f:
    f.seek(0)
    count = len(f.read().splitlines())
    f.write("1\n")
seed = os.environ.get("RATCHET_SEED")
rng = random.Random(f"{salt}:{seed}:{count}" if seed is not None else os.urandom(16))
effect = float(re.search(r"EFFECT = (\S+)", open("value.py").read()).group(1))
if tails == "t3":  # Student-t(3), variance 3, scaled to sd 1
    z, chi = rng.gauss(0, 1), sum(rng.gauss(0, 1) ** 2 for _ in range(3))
    noise = z / math.sqrt(chi / 3) / math.sqrt(3)
elif tails == "outliers" and rng.random() < 0.05:
    noise = rng.choice((-5.0, 5.0))
else:
    noise = rng.gauss(0, 1)
print(f"score: {10 - effect + noise - drift * count:.6f}")
"""

PROPOSE = r"""
import os, random, re, sys
share, effect, log = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
text = open("value.py").read()
rng = random.Random(os.urandom(16))
if rng.random() < share:
    old = float(re.search(r"EFFECT = (\S+)", text).group(1))
    text = re.sub(r"EFFECT = \S+", f"EFFECT = {old + effect:g}", text)
    kind = "real"
else:
    kind = "null"
# every proposal is a tree of its own: ratchet does not measure a tree it measured before
text = re.sub(r"TAG = \S+", f"TAG = {rng.randrange(10**9)}", text)
open("value.py", "w").write(text)
open(log, "a").write(kind + "\n")
print(f"{kind} change")
"""

SPEC = """[scope]
editable = ["value.py"]
[metric]
command = {metric}
name = "score"
goal = "minimize"
budget = "20s"
[proposer]
kind = "command"
command = {propose}
budget = "20s"
[run]
max_experiments = {trials}
[policy]
kind = "{kind}"
[sandbox]
kind = "process"
"""


@dataclass(frozen=True)
class Condition:
    name: str
    tails: str = "gauss"
    drift: float = 0.0  # favourable, sd per measurement
    share: float = 0.0
    effect: float = 0.0
    noise_repeats: int = 0  # `ratchet noise --repeats N` before the run


CONDITIONS = {
    c.name: c
    for c in [
        Condition("pure noise"),
        Condition("after ratchet noise", noise_repeats=30),
        Condition("t3 tails", tails="t3"),
        Condition("5% outliers", tails="outliers"),
        Condition("drift 0.05", drift=0.05),
        Condition("30% +3 sd", share=0.3, effect=3.0),
        Condition("30% +1 sd", share=0.3, effect=1.0),
    ]
}
CONTENDERS = ["ratchet noise-aware", "ratchet greedy", "labloop 1.0.5"]


@dataclass
class Run:
    false_keeps: int
    real: int  # real changes proposed
    real_keeps: int
    measurements: int
    recorded: float  # sum of the recorded improvements of real keeps (ratchet only)
    wall_s: float


GIT_ID = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
          "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}  # fmt: skip
ENV = {k: v for k, v in {**os.environ, **GIT_ID}.items() if k != "RATCHET_SEED"}


def sh(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {done.returncode}: {(done.stderr or done.stdout)[-800:]}"
        )
    return done.stdout


def setup(top: Path, name: str, c: Condition) -> tuple[Path, Path, str, str]:
    """A fresh repo and a directory beside it (tally, proposal log); the two commands."""
    root = top / name
    repo = root / "repo"
    repo.mkdir(parents=True)
    (root / "metric.py").write_text(METRIC)
    (root / "propose.py").write_text(PROPOSE)
    (repo / "value.py").write_text("EFFECT = 0.0\nTAG = 0\n")
    (repo / ".gitignore").write_text(".ratchet/\n")
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)
    py = f"{sys.executable} -S"
    salt = random.randrange(2**31)
    metric = f"{py} {root}/metric.py {root} {c.tails} {c.drift} {salt}"
    propose = f"{py} {root}/propose.py {c.share} {c.effect} {root}/proposals"
    return root, repo, metric, propose


def count(path: Path, word: str | None = None) -> int:
    if not path.exists():
        return 0
    return sum(word is None or line == word for line in path.read_text().splitlines())


def run_ratchet(top: Path, name: str, c: Condition, kind: str, trials: int) -> Run:
    root, repo, metric, propose = setup(top, name, c)
    spec = SPEC.format(metric=json.dumps(metric), propose=json.dumps(propose), trials=trials,
                       kind=kind)  # fmt: skip
    (repo / "ratchet.toml").write_text(spec)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "spec"], repo)
    start = time.perf_counter()
    if c.noise_repeats:
        sh([sys.executable, "-m", "ratchet", "noise", "--repeats", str(c.noise_repeats)], repo)
    sh([sys.executable, "-m", "ratchet", "run"], repo)
    wall = time.perf_counter() - start
    db = sqlite3.connect(repo / ".ratchet" / "journal.db")
    rows = db.execute("SELECT id, decision, value, patch, proposer FROM experiments "
                      "ORDER BY id").fetchall()  # fmt: skip
    db.close()
    proposals = [r for r in rows if r[4] != "baseline"]
    assert len(proposals) == trials, f"{name}: {len(proposals)} proposals, expected {trials}"
    false_keeps = real_keeps = 0
    recorded = 0.0
    incumbent = next(r[2] for r in rows if r[4] == "baseline")
    for _, decision, value, patch, _ in proposals:
        if decision != "keep":
            continue
        if "+EFFECT" in (patch or ""):
            real_keeps += 1
            recorded += incumbent - value
        else:
            false_keeps += 1
        incumbent = value
    measurements = count(root / "tally")
    return Run(false_keeps, count(root / "proposals", "real"), real_keeps, measurements, recorded,
               wall)  # fmt: skip


def run_labloop(top: Path, name: str, c: Condition, labloop: str, trials: int) -> Run:
    """`labloop baseline` then `labloop run` with its defaults; keeps from its git history."""
    root, repo, metric, propose = setup(top, name, c)
    ledger = root / "ledger.jsonl"  # outside the repo: labloop would commit it
    common = ["--run", metric, "--metric", "score", "--goal", "minimize", "--ledger", str(ledger)]
    start = time.perf_counter()
    sh([labloop, "baseline", *common], repo)
    sh([labloop, "run", *common, "--propose", propose, "--trials", str(trials),
        "--sandbox", "none"], repo)  # fmt: skip
    wall = time.perf_counter() - start
    rows = [r for line in ledger.read_text().splitlines() if "outcome" in (r := json.loads(line))]
    kept = sum(r["outcome"] == "kept" for r in rows if r.get("note") != "baseline")
    # labloop commits each keep: the kept diffs say which keeps were real
    log = sh(["git", "log", "-p", "--format=format:@@commit", "HEAD"], repo)
    commits = log.split("@@commit")[1:-1]  # newest first; the last is the initial commit
    real_keeps = sum("+EFFECT" in commit for commit in commits)
    false_keeps = kept - real_keeps
    return Run(false_keeps, count(root / "proposals", "real"), real_keeps, count(root / "tally"),
               math.nan, wall)  # fmt: skip


def ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (normal approximation)."""
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, half


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """A proportion and its 95% Wilson interval."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p, z = k / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def summarize(runs: list[Run], trials: int, effect: float) -> dict[str, float]:
    per60 = [r.false_keeps * TRIALS / trials for r in runs]
    fk, fk_ci = ci(per60)
    cost, cost_ci = ci([r.measurements / trials for r in runs])
    real, kept = sum(r.real for r in runs), sum(r.real_keeps for r in runs)
    rate, low, high = wilson(kept, real)
    recorded = sum(r.recorded for r in runs)
    return {"runs": len(runs), "false_keeps_per_60": fk, "false_keeps_ci95": fk_ci,
            "runs_with_a_false_keep": sum(r.false_keeps > 0 for r in runs) / len(runs),
            "real_proposed": real, "real_keep_rate": rate, "real_keep_low": low,
            "real_keep_high": high, "measurements_per_trial": cost,
            "measurements_ci95": cost_ci,
            "recorded_over_true": recorded / (kept * effect) if kept and effect else math.nan,
            "wall_s": statistics.fmean(r.wall_s for r in runs)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=900, help="stop starting runs after")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument(
        "--peers-on",
        default="pure noise,drift 0.05,30% +3 sd",
        help="the conditions greedy and labloop run under (noise-aware: all)",
    )
    parser.add_argument("--labloop", help="a labloop executable (default: install one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    conditions = [CONDITIONS[name] for name in args.conditions.split(",")]
    contenders = args.contenders.split(",")
    began = time.perf_counter()
    top = Path(tempfile.mkdtemp(prefix="ratchet-stats-e2e-"))
    labloop = args.labloop
    if "labloop 1.0.5" in contenders and not labloop:
        installed, _, why = install_labloop(top)
        labloop = str(installed) if installed else None
        if not installed:
            print(f"labloop: not run ({why})")
    if not labloop:
        contenders = [c for c in contenders if not c.startswith("labloop")]
    peers_on = args.peers_on.split(",")
    cells = [(c, who) for c in conditions for who in contenders
             if who == "ratchet noise-aware" or c.name in peers_on]  # fmt: skip
    results: dict[tuple[str, str], list[Run]] = {(c.name, who): [] for c, who in cells}

    def one(job: tuple[int, Condition, str]) -> tuple[Condition, str, Run]:
        r, c, who = job
        name = f"{who}-{c.name}-{r}".replace(" ", "_").replace("%", "pc").replace("+", "p")
        if who == "labloop 1.0.5":
            assert labloop is not None
            result = run_labloop(top, name, c, labloop, args.trials)
        else:
            result = run_ratchet(top, name, c, who.split()[1], args.trials)
        if not os.environ.get("KEEP_BENCH"):
            shutil.rmtree(top / name, ignore_errors=True)
        return c, who, result

    rounds = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        while time.perf_counter() - began < args.budget_s:
            jobs = [(rounds, c, who) for c, who in cells]
            for c, who, result in pool.map(one, jobs):
                results[(c.name, who)].append(result)
            rounds += 1
            print(f"round {rounds} done at {time.perf_counter() - began:.0f} s", flush=True)
    if not os.environ.get("KEEP_BENCH"):
        shutil.rmtree(top, ignore_errors=True)
    print(f"\n{rounds} runs of {args.trials} trials per cell; sd of one measurement 1; "
          f"{args.jobs} at once")  # fmt: skip
    print(f"{'contender':<20} {'condition':<20} {'false/60':>12} {'runs w/':>7} "
          f"{'real kept (95% CI)':>22} {'meas/trial':>12} {'rec/true':>8} {'s/run':>6}")  # fmt: skip
    table = {}
    for c, who in cells:
        s = summarize(results[(c.name, who)], args.trials, c.effect)
        table[f"{who} | {c.name}"] = s
        kept = (f"{s['real_keep_rate']:.0%} ({s['real_keep_low']:.0%}-{s['real_keep_high']:.0%})"
                if c.share else "-")  # fmt: skip
        print(f"{who:<20} {c.name:<20} {s['false_keeps_per_60']:>6.2f} ± {s['false_keeps_ci95']:<4.2f}"
              f" {s['runs_with_a_false_keep']:>6.0%} {kept:>22} "
              f"{s['measurements_per_trial']:>6.2f} ± {s['measurements_ci95']:<4.2f}"
              f" {s['recorded_over_true']:>8.2f} {s['wall_s']:>6.0f}", flush=True)  # fmt: skip
    took = time.perf_counter() - began
    print(f"bench took {took:.0f} s")
    if args.json:
        raw = {f"{who} | {name}": [asdict(r) for r in runs]
               for (name, who), runs in results.items()}  # fmt: skip
        args.json.write_text(json.dumps({"trials": args.trials, "rounds": rounds, "took_s": took,
                                         "table": table, "runs": raw}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
