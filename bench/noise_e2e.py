"""False keeps on a pure-noise metric, end to end: greedy, noise-aware and labloop, next to
the simulation of the same rules.

The metric prints N(10, 1) whatever the code says, seeded from $RATCHET_SEED when set (ratchet
sets it for every measurement; labloop does not, so it falls back to /dev/urandom). The
proposer rewrites a constant the metric never reads, so after the baseline every keep is a
false keep. Each contender gets a fresh repo per run, a baseline, then TRIALS trials.

    python bench/noise_e2e.py [--runs 10] [--trials 60] [--sim-runs 400] [--min-delta 1.0]
                              [--json PATH] [--no-labloop]

Stdlib only. labloop 1.0.5 is installed from PyPI into a throwaway venv.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise import simulate

from ratchet.policy import Greedy, NoiseAware

RUNS = 10
TRIALS = 60
SIM_RUNS = 400
MIN_DELTA = 1.0  # labloop --min-delta: 1 sd, what `labloop noise` calls "permissive" (its stdev)
LABLOOP = "labloop==1.0.5"
# N(10, 1) by Box-Muller in awk (no Python start-up per measurement). awk's srand is C's
# srandom, whose first draws are nearly linear in the seed, and ratchet's seeds step by 7919
# from one experiment to the next: seeded directly, successive draws drift together and greedy
# keeps ~20% more than on independent noise. So the seed is scrambled first (x -> x*x + c modulo
# a prime below 2**26, exact in doubles). SALT differs per repo: ratchet's seeds depend only on
# the experiment's number, so without it every fresh repo would see the very same noise.
# Every call also appends a line to TALLY (outside the repo): a count of the real measurements.
METRIC = (
    """awk -v s="${RATCHET_SEED:-$(od -An -N4 -tu4 /dev/urandom)}" 'BEGIN {"""
    " x = (s + SALT) % 67108859; for (i = 0; i < 4; i++) x = (x * x + 12345) % 67108859;"
    " srand(x); u = 1 - rand(); v = rand();"
    ' printf "score: %.6f\\n", 10 + sqrt(-2 * log(u)) * cos(6.283185307179586 * v);'
    """ print 1 >> "TALLY" }'"""
)
PROPOSE = 'sed -i "s/^X = .*/X = $(od -An -N4 -tu4 /dev/urandom | tr -dc 0-9)/" value.py'
SPEC = """[scope]
editable = ["value.py"]
[metric]
command = {metric}
name = "score"
goal = "minimize"
budget = "10s"
[proposer]
kind = "command"
command = {propose}
budget = "10s"
[run]
max_experiments = {trials}
[policy]
kind = "{kind}"
"""
GIT_ID = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
          "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}  # fmt: skip
ENV = {k: v for k, v in {**os.environ, **GIT_ID}.items() if k != "RATCHET_SEED"}
CONTENDERS = ["ratchet greedy", "ratchet noise-aware", "labloop default", "labloop confirm"]

Result = tuple[int, int, int, float]  # false keeps, measurements (counted), tallied, wall s


def sh(cmd: list[str], cwd: Path) -> str:
    return subprocess.run(cmd, cwd=cwd, env=ENV, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def fresh_repo(root: Path, name: str, extra: dict[str, str] | None = None) -> tuple[Path, str]:
    """A repo holding value.py, and the metric command for it (its own salt and tally)."""
    repo, tally = root / name, root / f"{name}.tally"
    repo.mkdir()
    for path, text in {"value.py": "X = 0\n", **(extra or {})}.items():
        (repo / path).write_text(text)
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)
    return repo, METRIC.replace("SALT", str(random.randrange(2**31))).replace("TALLY", str(tally))


def tallied(root: Path, name: str) -> int:
    tally = root / f"{name}.tally"
    return len(tally.read_text().splitlines()) if tally.exists() else 0


def run_ratchet(root: Path, name: str, trials: int, kind: str) -> Result:
    repo, metric = fresh_repo(root, name, {".gitignore": ".ratchet/\n"})
    spec = SPEC.format(metric=json.dumps(metric), propose=json.dumps(PROPOSE), trials=trials,
                       kind=kind)  # fmt: skip
    (repo / "ratchet.toml").write_text(spec)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "spec"], repo)
    start = time.perf_counter()
    sh([sys.executable, "-m", "ratchet", "run"], repo)
    wall = time.perf_counter() - start
    db = sqlite3.connect(repo / ".ratchet" / "journal.db")
    proposals, keeps = db.execute("SELECT count(*), sum(decision = 'keep') FROM experiments "
                                  "WHERE proposer != 'baseline'").fetchone()  # fmt: skip
    measurements = db.execute("SELECT count(*) FROM measurements").fetchone()[0]
    db.close()
    assert proposals == trials, f"{name}: {proposals} proposals, expected {trials}"
    return keeps or 0, measurements, tallied(root, name), wall


def install_labloop(root: Path) -> Path | None:
    venv = root / "labloop-venv"
    try:
        sh([sys.executable, "-m", "venv", str(venv)], root)
        sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
            "--disable-pip-version-check", LABLOOP], root)  # fmt: skip
    except subprocess.CalledProcessError as error:
        print(f"labloop: not run ({(error.stderr or '').strip()[-300:]})")
        return None
    return venv / "bin" / "labloop"


def run_labloop(root: Path, name: str, trials: int, labloop: Path, min_delta: float) -> Result:
    """`labloop baseline` (as `labloop init` says to), then `labloop run`; counts from the ledger.
    min_delta 0 is labloop's defaults; any other is `--min-delta min_delta --confirm`.

    The ledger has one row per trial; a --confirm re-run is not a row of its own, but a kept
    trial always had one and a reverted one had one when its note says it "won at" first.
    """
    repo, metric = fresh_repo(root, name)
    ledger = root / f"{name}.jsonl"  # outside the repo: labloop would commit it
    common = ["--run", metric, "--metric", "score", "--goal", "minimize", "--ledger", str(ledger)]
    extra = ["--min-delta", str(min_delta), "--confirm"] if min_delta else []
    start = time.perf_counter()
    sh([str(labloop), "baseline", *common], repo)
    sh([str(labloop), "run", *common, "--propose", PROPOSE, "--trials", str(trials),
        "--sandbox", "none", *extra], repo)  # fmt: skip
    wall = time.perf_counter() - start
    rows = [
        row for line in ledger.read_text().splitlines() if "outcome" in (row := json.loads(line))
    ]
    measured = [r for r in rows if r["outcome"] in ("kept", "reverted")]
    confirmed = [
        r for r in measured[1:] if r["outcome"] == "kept" or r["note"].startswith("won at")
    ]
    keeps = sum(r["outcome"] == "kept" for r in rows if r["note"] != "baseline")
    assert len(rows) == trials + 1, f"{name}: {len(rows)} ledger rows, expected {trials + 1}"
    return keeps, len(measured) + len(confirmed) * bool(min_delta), tallied(root, name), wall


def simulate_labloop(min_delta: float, trials: int, rng: random.Random) -> tuple[int, int]:
    """labloop's rule, reimplemented: beat the incumbent by more than min_delta (twice, with
    --confirm, then the incumbent is the worse of the two). One run: (keeps, measurements)."""
    incumbent, keeps, measurements = rng.gauss(10, 1), 0, 1
    for _ in range(trials):
        first = rng.gauss(10, 1)
        measurements += 1
        if first >= incumbent - min_delta:
            continue
        if min_delta:  # --confirm
            second = rng.gauss(10, 1)
            measurements += 1
            if second >= incumbent - min_delta:
                continue
            first = max(first, second)
        incumbent, keeps = first, keeps + 1
    return keeps, measurements


def row(keeps: list[int], measurements: list[int], walls: list[float], n: int) -> dict[str, float]:
    """Over runs: false keeps per TRIALS trials (mean, sd, se), measurements per trial, wall s/run."""
    per_run = [k * TRIALS / n for k in keeps]
    sd = statistics.stdev(per_run) if len(per_run) > 1 else float("nan")
    return {"false_keeps": statistics.fmean(per_run), "sd": sd, "se": sd / len(per_run) ** 0.5,
            "measurements_per_trial": sum(measurements) / len(measurements) / n,
            "wall_s": statistics.fmean(walls)}  # fmt: skip


def run_e2e(args: argparse.Namespace, top: Path) -> dict[str, dict[str, float]]:
    n = args.trials
    runners = {
        "ratchet greedy": lambda root, name: run_ratchet(root, name, n, "greedy"),
        "ratchet noise-aware": lambda root, name: run_ratchet(root, name, n, "noise-aware"),
    }
    labloop = None if args.no_labloop else install_labloop(top)
    if labloop:
        runners["labloop default"] = lambda root, name: run_labloop(root, name, n, labloop, 0)
        runners["labloop confirm"] = lambda root, name: run_labloop(
            root, name, n, labloop, args.min_delta
        )
    results: dict[str, list[Result]] = {name: [] for name in runners}
    for r in range(args.runs):  # interleaved, so that the contenders share the machine's noise
        for name, runner in runners.items():
            results[name].append(runner(top, f"{name.replace(' ', '-')}-{r}"))
        keeps = ", ".join(f"{name} {runs[-1][0]}" for name, runs in results.items())
        print(f"run {r + 1}/{args.runs}: false keeps {keeps}", flush=True)
    rows = {}
    for name, runs in results.items():
        keeps, counted, tally, walls = (list(column) for column in zip(*runs, strict=True))
        if counted != tally:
            print(f"note: {name}: {sum(counted)} measurements counted, {sum(tally)} tallied")
        rows[name] = row(keeps, counted, walls, n)
    return rows


def run_sim(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    n = args.trials
    sims = {
        "ratchet greedy": lambda rng: simulate(Greedy(), 0.0, n, rng),
        "ratchet noise-aware": lambda rng: simulate(NoiseAware(), 0.0, n, rng),
        "labloop default": lambda rng: simulate_labloop(0.0, n, rng),
        "labloop confirm": lambda rng: simulate_labloop(args.min_delta, n, rng),
    }
    rows = {}
    for name, sim in sims.items():
        rng, start = random.Random(0), time.perf_counter()
        runs = [sim(rng) for _ in range(args.sim_runs)]
        wall = (time.perf_counter() - start) / args.sim_runs
        rows[name] = row([k for k, _ in runs], [m for _, m in runs], [wall], n)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="fresh repos per contender")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--sim-runs", type=int, default=SIM_RUNS)
    parser.add_argument("--min-delta", type=float, default=MIN_DELTA, help="for labloop confirm")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-labloop", action="store_true", help="skip labloop")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ratchet-noise-e2e-") as tmp:
        e2e = run_e2e(args, Path(tmp))
    sim = run_sim(args)
    print(f"\npure noise N(10, 1): {args.runs} e2e and {args.sim_runs} simulated runs of "
          f"{args.trials} trials; labloop confirm is --min-delta {args.min_delta:g} --confirm")  # fmt: skip
    print(f"{'contender':<20} {'source':<6} {f'false keeps/{TRIALS}':>16} {'meas/trial':>10} "
          f"{'wall s/run':>10}")  # fmt: skip
    for name in CONTENDERS:
        for source, rows in (("e2e", e2e), ("sim", sim)):
            if name in rows:
                r = rows[name]
                keeps = f"{r['false_keeps']:.2f} ± {r['se']:.2f}"
                print(f"{name:<20} {source:<6} {keeps:>16} {r['measurements_per_trial']:>10.3f} "
                      f"{r['wall_s']:>10.2f}")  # fmt: skip
    # if they agree, an e2e mean of R runs strays from the simulated one by about sd_sim / sqrt(R)
    # (not the e2e's own se, which is 0 when all R runs happen to keep nothing)
    disagree = [
        name
        for name, r in e2e.items()
        if abs(r["false_keeps"] - sim[name]["false_keeps"])
        > 3 * (sim[name]["sd"] ** 2 / args.runs + sim[name]["se"] ** 2) ** 0.5
    ]
    verdict = f"DISAGREE: {', '.join(disagree)}" if disagree else "agree"
    print(f"false keeps, e2e vs sim (3 se, se = sim sd / sqrt({args.runs})): {verdict}")
    took = time.perf_counter() - began
    print(f"bench took {took:.0f} s")
    if args.json:
        figures = {"runs": args.runs, "sim_runs": args.sim_runs, "trials": args.trials,
                   "min_delta": args.min_delta, "e2e": e2e, "sim": sim, "disagree": disagree,
                   "took_s": took}  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
