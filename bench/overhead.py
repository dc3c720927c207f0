"""ratchet's own overhead per experiment, side by side with a bare shell loop and labloop.

Every contender runs the same propose command (sed rewrites one constant to a random
number) and the same ~0.1 s metric command, on its own fresh git repo. The "work" of an
experiment (spawning the two commands) is timed alone, half before and half after the
contenders; each contender's overhead is its wall time minus that work, per experiment.
Contenders run in rotating order for several rounds, and the median over the rounds of
each figure is reported, since the machine may be noisy.

    python bench/overhead.py [--experiments 60] [--rounds 3] [--json PATH] [--no-labloop]

Stdlib only. labloop 1.0.5 is installed from PyPI into a throwaway venv.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENTS = 60
SHORT = 5  # a short run beside the long one: the difference is the cost per experiment
ROUNDS = 3
LABLOOP = "labloop==1.0.5"
TARGET_OVERHEAD_MS = 20.0  # ratchet's overhead per experiment, at most
TARGET_RATIO = 5.0  # labloop's overhead / ratchet's, at least
METRIC = "sleep 0.1 && sed -n 's/^X = /score: /p' value.py"  # prints `score: <X>`
PROPOSE = 'sed -i "s/^X = .*/X = $(od -An -N2 -tu2 /dev/urandom | tr -dc 0-9)/" value.py'
GOAL = "maximize"  # random values: a keep now and then (a new record), mostly discards
GIT_ID = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
          "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}  # fmt: skip
ENV = {**os.environ, **GIT_ID}
# the process layer, like labloop's `--sandbox none`; bwrap adds ~5 ms a command
SPEC = f"""[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = {json.dumps(METRIC)}
name = "score"
goal = "{GOAL}"
budget = "10s"
[proposer]
kind = "command"
command = {json.dumps(PROPOSE)}
budget = "10s"
[run]
max_experiments = {{n}}
"""
BARE_LOOP = """set -e
best=
for i in $(seq {n}); do
  {propose}
  out=$({metric})
  v=${{out#score: }}
  if [ -z "$best" ] || [ "$v" -gt "$best" ]; then
    best=$v; git commit -qam "score $v"
  else
    git checkout -q -- .
  fi
done
"""


def sh(cmd: list[str] | str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=ENV, shell=isinstance(cmd, str), check=True,
                          capture_output=True, text=True)  # fmt: skip


def timed(cmd: list[str] | str, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = sh(cmd, cwd).stdout
    return time.perf_counter() - start, out


def fresh_repo(root: Path, name: str, extra: dict[str, str] | None = None) -> Path:
    repo = root / name
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir()
    files = {"value.py": "X = 0\n", **(extra or {})}
    for path, text in files.items():
        (repo / path).write_text(text)
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)
    return repo


# the contenders: each returns (wall seconds, proposals, measurements, keeps) ------------
def run_work(root: Path, n: int) -> list[tuple[float, float]]:
    """Seconds of each propose and metric command spawned directly: no git, no loop."""
    repo = root / "work"
    repo.mkdir(exist_ok=True)
    (repo / "value.py").write_text("X = 0\n")
    return [(timed(PROPOSE, repo)[0], timed(METRIC, repo)[0]) for _ in range(n)]


def run_bare(root: Path, n: int) -> tuple[float, int, int, int]:
    repo = fresh_repo(root, "bare")
    (root / "loop.sh").write_text(BARE_LOOP.format(n=n, propose=PROPOSE, metric=METRIC))
    wall, _ = timed(["bash", str(root / "loop.sh")], repo)
    keeps = int(sh(["git", "rev-list", "--count", "HEAD"], repo).stdout) - 1
    return wall, n, n, keeps


def ratchet_cmd() -> list[str]:
    """The installed ratchet, run by this interpreter (a pyenv shim would add its own start-up)."""
    if importlib.util.find_spec("ratchet") is not None:
        return [sys.executable, "-m", "ratchet"]
    exe = shutil.which("ratchet")
    if exe is None:
        sys.exit("ratchet is not installed: pip install -e . first")
    return [exe]


def run_ratchet(root: Path, n: int) -> tuple[float, int, int, int]:
    repo = fresh_repo(root, "ratchet", {"ratchet.toml": SPEC.format(n=n),
                                        ".gitignore": ".ratchet/\n"})  # fmt: skip
    wall, _ = timed([*ratchet_cmd(), "run"], repo)
    db = sqlite3.connect(repo / ".ratchet" / "journal.db")
    proposals, keeps = db.execute("SELECT count(*), sum(decision = 'keep') FROM experiments "
                                  "WHERE proposer != 'baseline'").fetchone()  # fmt: skip
    measurements = db.execute("SELECT count(*) FROM measurements").fetchone()[0]
    db.close()
    return wall, proposals, measurements, keeps or 0


def install_labloop(root: Path) -> tuple[Path | None, float, str]:
    start = time.perf_counter()
    venv = root / "labloop-venv"
    try:
        sh([sys.executable, "-m", "venv", str(venv)], root)
        sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
            "--disable-pip-version-check", LABLOOP], root)  # fmt: skip
    except subprocess.CalledProcessError as error:
        return None, time.perf_counter() - start, (error.stderr or "").strip()[-300:]
    return venv / "bin" / "labloop", time.perf_counter() - start, ""


def run_labloop(root: Path, n: int, *, labloop: Path) -> tuple[float, int, int, int]:
    repo = fresh_repo(root, "labloop")
    ledger = root / f"labloop-ledger-{n}.jsonl"  # outside the repo: labloop would commit it
    ledger.unlink(missing_ok=True)
    wall, out = timed([str(labloop), "run", "--run", METRIC, "--metric", "score",
                       "--goal", GOAL, "--propose", PROPOSE, "--trials", str(n),
                       "--budget", "10", "--sandbox", "none",
                       "--ledger", str(ledger)], repo)  # fmt: skip
    trials = re.findall(r"^\[(.)\] trial\s+\d+", out, re.MULTILINE)
    return wall, len(trials), len(trials), trials.count("+")


def startup(cmd: list[str]) -> float:
    return statistics.median(timed(cmd, Path.cwd())[0] for _ in range(3))


# ------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=EXPERIMENTS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-labloop", action="store_true", help="skip labloop")
    args = parser.parse_args()
    n, began = args.experiments, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-") as tmp:
        top = Path(tmp)
        labloop, install_s, why = (None, 0.0, "skipped") if args.no_labloop \
            else install_labloop(top)  # fmt: skip
        if labloop is None:
            print(f"labloop: not run ({why or 'skipped'})")
        else:
            print(f"labloop: {LABLOOP} installed in {install_s:.1f} s")
        starts = {"ratchet": startup([*ratchet_cmd(), "--help"])}
        if labloop:
            starts["labloop"] = startup([str(labloop), "--help"])
        rounds: list[dict[str, dict[str, float]]] = []
        for r in range(args.rounds):
            root = top / f"round{r}"
            root.mkdir()
            contenders = {"bare loop": run_bare, "ratchet": run_ratchet}
            if labloop:
                contenders["labloop"] = functools.partial(run_labloop, labloop=labloop)
            order = (
                list(contenders)[r % len(contenders) :] + list(contenders)[: r % len(contenders)]
            )
            # the work is timed half before and half after the contenders, to share their noise
            work = run_work(root, n // 2)
            runs = {name: contenders[name](root, n) for name in order}
            shorts = {name: contenders[name](root, SHORT) for name in order}
            work += run_work(root, n - n // 2)
            propose_s = statistics.fmean(p for p, _ in work)
            metric_s = statistics.fmean(m for _, m in work)
            figures = {
                "work": {
                    "per_exp_ms": 1000 * (propose_s + metric_s),
                    "overhead_ms": 0.0,
                    "propose_ms": 1000 * propose_s,
                    "metric_ms": 1000 * metric_s,
                }
            }
            for name, (wall, proposals, measurements, keeps) in runs.items():
                spent = proposals * propose_s + measurements * metric_s
                # what one more experiment costs beyond its work: fixed costs cancel out
                s_wall, s_proposals, s_measurements, _ = shorts[name]
                s_spent = s_proposals * propose_s + s_measurements * metric_s
                marginal = ((wall - spent) - (s_wall - s_spent)) / max(proposals - s_proposals, 1)
                fixed = (s_wall - s_spent) - s_proposals * marginal
                figures[name] = {"wall_s": wall, "experiments": proposals,
                                 "measurements": measurements, "keeps": keeps,
                                 "per_exp_ms": 1000 * wall / max(proposals, 1),
                                 "overhead_ms": 1000 * (wall - spent) / max(proposals, 1),
                                 "marginal_ms": 1000 * marginal, "fixed_ms": 1000 * fixed}  # fmt: skip
            rounds.append(figures)
            shown = ", ".join(
                f"{k} {v['overhead_ms']:.1f} (marginal {v['marginal_ms']:.1f})"
                for k, v in figures.items()
                if k != "work"
            )
            print(f"round {r + 1}/{args.rounds}: overhead ms/exp: {shown}", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(f[name][key] for f in rounds)

    names = list(rounds[0])
    print(f"\n{n} experiments per contender, {args.rounds} rounds, medians over rounds; "
          f"work = propose {median('work', 'propose_ms'):.1f} ms + metric "
          f"{median('work', 'metric_ms'):.1f} ms")  # fmt: skip
    print(
        f"{'contender':<10} {'exps':>5} {'meas':>5} {'keeps':>5} {'ms/exp':>8} {'overhead ms':>12}"
        f" {'marginal ms':>12} {'fixed ms':>9}"
    )
    for name in names:
        counts = (" ".join(f"{median(name, k):>5.0f}" for k in ("experiments", "measurements",
                  "keeps")) if name != "work" else f"{n:>5} {n:>5} {'-':>5}")  # fmt: skip
        extra = (f" {median(name, 'marginal_ms'):>12.1f} {median(name, 'fixed_ms'):>9.0f}"
                 if name != "work" else "")  # fmt: skip
        print(f"{name:<10} {counts} {median(name, 'per_exp_ms'):>8.1f} "
              f"{median(name, 'overhead_ms'):>12.1f}{extra}")  # fmt: skip
    print(
        "overhead: per experiment, fixed costs spread over the run; marginal: one more "
        f"experiment ({n} vs {SHORT}); fixed: once per run (start-up, set-up)"
    )
    print(
        "start-up (--help), included above, once per run: "
        + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in starts.items())
    )
    ours = median("ratchet", "overhead_ms")
    beyond_bare = ours - median("bare loop", "overhead_ms")
    print(f"ratchet beyond the bare loop: {beyond_bare:+.1f} ms/exp")
    verdicts = {"overhead": ours <= TARGET_OVERHEAD_MS}
    print(f"{'PASS' if verdicts['overhead'] else 'MISS'}: ratchet overhead {ours:.1f} ms/exp "
          f"(target <= {TARGET_OVERHEAD_MS:g})")  # fmt: skip
    marginal = median("ratchet", "marginal_ms")
    verdicts["marginal"] = marginal <= TARGET_OVERHEAD_MS
    print(f"{'PASS' if verdicts['marginal'] else 'MISS'}: ratchet marginal overhead "
          f"{marginal:.1f} ms/exp (target <= {TARGET_OVERHEAD_MS:g})")  # fmt: skip
    ratio = marginal_ratio = None
    if "labloop" in names:
        ratio = median("labloop", "overhead_ms") / ours if ours > 0 else float("inf")
        verdicts["vs_labloop"] = ratio >= TARGET_RATIO
        print(f"{'PASS' if verdicts['vs_labloop'] else 'MISS'}: labloop overhead / ratchet's = "
              f"{ratio:.2f}x (target >= {TARGET_RATIO:g}x)")  # fmt: skip
        theirs = median("labloop", "marginal_ms")
        marginal_ratio = theirs / marginal if marginal > 0 else float("inf")
        verdicts["vs_labloop_marginal"] = marginal_ratio >= TARGET_RATIO
        print(f"{'PASS' if verdicts['vs_labloop_marginal'] else 'MISS'}: labloop marginal "
              f"overhead / ratchet's = {marginal_ratio:.2f}x (target >= {TARGET_RATIO:g}x)")  # fmt: skip
    total = time.perf_counter() - began
    print(f"bench took {total:.0f} s")
    if args.json:
        medians = {k: {m: median(k, m) for m in rounds[0][k]} for k in names}
        args.json.write_text(json.dumps({
            "experiments": n, "rounds": rounds, "median": medians, "startup_s": starts,
            "ratchet_beyond_bare_ms": beyond_bare, "labloop_over_ratchet": ratio,
            "labloop_over_ratchet_marginal": marginal_ratio,
            "targets": {"overhead_ms": TARGET_OVERHEAD_MS, "ratio": TARGET_RATIO},
            "pass": verdicts, "labloop_install_s": install_s, "took_s": total}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
