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
PROPOSE = 'sed -i "s/^X = .*/X = $(od -An -N2 -tu2 /dev/urandom | tr -dc 0-9)/" value.py'
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


def mean_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return statistics.fmean(values), se


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="fresh repos per contender")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--sim-runs", type=int, default=SIM_RUNS)
    parser.add_argument("--min-delta", type=float, default=MIN_DELTA, help="for labloop confirm")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-labloop", action="store_true", help="skip labloop")
    args = parser.parse_args()
    n, began = args.trials, time.perf_counter()
    rows: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ratchet-noise-e2e-") as tmp:
        top = Path(tmp)
        labloop = None if args.no_labloop else install_labloop(top)
        runners = {
            "ratchet greedy": lambda root, name: run_ratchet(root, name, n, "greedy"),
            "ratchet noise-aware": lambda root, name: run_ratchet(root, name, n, "noise-aware"),
        }
        if labloop:
            runners["labloop default"] = lambda root, name: run_labloop(root, name, n, labloop, 0)
            runners["labloop confirm"] = lambda root, name: run_labloop(root, name, n, labloop,
                                                                        args.min_delta)  # fmt: skip
        results: dict[str, list[Result]] = {name: [] for name in runners}
        for r in range(args.runs):  # interleaved, so that the contenders share the machine's noise
            for name, runner in runners.items():
                results[name].append(runner(top, f"{name.replace(' ', '-')}-{r}"))
            print(f"run {r + 1}/{args.runs}: false keeps " + ", ".join(
                f"{k} {v[-1][0]}" for k, v in results.items()), flush=True)  # fmt: skip
    for name, runs in results.items():
        keeps, se = mean_se([k * TRIALS / n for k, *_ in runs])
        counted, tally = (sum(r[i] for r in runs) / len(runs) / n for i in (1, 2))
        if counted != tally:
            print(f"note: {name} counted {counted:.3f} measurements/trial, the tally {tally:.3f}")
        wall = statistics.fmean(r[3] for r in runs)
        rows[f"{name} e2e"] = {"false_keeps": keeps, "se": se, "measurements_per_trial": counted,
                               "tallied_per_trial": tally, "wall_s": wall}  # fmt: skip
    sims = {"ratchet greedy": lambda rng: simulate(Greedy(), 0.0, n, rng),
            "ratchet noise-aware": lambda rng: simulate(NoiseAware(), 0.0, n, rng),
            "labloop default": lambda rng: simulate_labloop(0.0, n, rng),
            "labloop confirm": lambda rng: simulate_labloop(args.min_delta, n, rng)}  # fmt: skip
    for name, sim in sims.items():
        rng = random.Random(0)
        start = time.perf_counter()
        runs_ = [sim(rng) for _ in range(args.sim_runs)]
        keeps, se = mean_se([k * TRIALS / n for k, _ in runs_])
        rows[f"{name} sim"] = {"false_keeps": keeps, "se": se, "wall_s": time.perf_counter() - start,
                               "measurements_per_trial": sum(m for _, m in runs_) / len(runs_) / n}  # fmt: skip
    print(f"\npure noise N(10, 1); {args.runs} e2e runs and {args.sim_runs} simulated runs of "
          f"{n} trials each; labloop confirm: --min-delta {args.min_delta:g} --confirm")  # fmt: skip
    print(f"{'contender':<20} {'source':<6} {f'false keeps/{TRIALS}':>16} "
          f"{'meas/trial':>10} {'wall s/run':>10}")  # fmt: skip
    for name in CONTENDERS:
        for source in ("e2e", "sim"):
            row = rows.get(f"{name} {source}")
            if row:
                keeps = f"{row['false_keeps']:.2f} ± {row['se']:.2f}"
                print(f"{name:<20} {source:<6} {keeps:>16} {row['measurements_per_trial']:>10.3f} "
                      f"{row['wall_s']:>10.2f}")  # fmt: skip
    disagree = [name for name in results
                if abs(rows[f"{name} e2e"]["false_keeps"] - rows[f"{name} sim"]["false_keeps"])
                > 3 * (rows[f"{name} e2e"]["se"] ** 2 + rows[f"{name} sim"]["se"] ** 2) ** 0.5]  # fmt: skip
    print("e2e and sim agree within 3 standard errors" if not disagree
          else f"e2e and sim DISAGREE (beyond 3 se): {', '.join(disagree)}")  # fmt: skip
    total = time.perf_counter() - began
    print(f"bench took {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "sim_runs": args.sim_runs,
                                         "trials": n, "min_delta": args.min_delta, "rows": rows,
                                         "disagree": disagree, "took_s": total}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
