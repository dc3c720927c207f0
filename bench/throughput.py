"""Throughput with N slots against one, side by side, and ratchet's overhead with 4 slots.

Each contender is a real `ratchet run` on its own fresh git repo, with the same random
proposer (sed rewrites one constant) and a sleep-bound metric. Throughput is taken from
the journal: experiments per second between the first experiment's start and the last
one's end, so ratchet's start-up and the baseline are left out of every contender alike.
Contenders run in rotating order for several rounds; medians are reported.

  1 s metric:   local 1 slot, local 2 slots, Ray 1 slot, Ray 2 slots (a local cluster)
  0.1 s metric: local 4 slots; the overhead per experiment is the slot time not spent in
                the user's commands: (4 x wall - sum of proposal and measurement times) / n

    python bench/throughput.py [--experiments 12] [--rounds 2] [--no-ray] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENTS = 12
ROUNDS = 2
TARGET_LOCAL = 1.9  # 2 slots' throughput over 1 slot's, at least
TARGET_RAY = 1.8
PROPOSE = 'sed -i "s/^X = .*/X = $(od -An -N2 -tu2 /dev/urandom | tr -dc 0-9)/" value.py'
GIT_ID = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
          "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}  # fmt: skip
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
SPEC = """[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = {metric}
name = "score"
goal = "maximize"
budget = "30s"
[policy]
kind = "greedy"
[proposer]
kind = "command"
command = {propose}
[run]
max_experiments = {n}
[executor]
kind = "{kind}"
parallel = {slots}
"""


def make_project(root: Path, kind: str, slots: int, seconds: float, n: int) -> Path:
    root.mkdir(parents=True)
    metric = f"sleep {seconds} && sed -n 's/^X = /score: /p' value.py"
    (root / "value.py").write_text("X = 1\n")
    (root / ".gitignore").write_text(".ratchet/\n")
    (root / "ratchet.toml").write_text(SPEC.format(metric=json.dumps(metric), n=n, kind=kind,
                                                   propose=json.dumps(PROPOSE), slots=slots))  # fmt: skip
    env = {**os.environ, **GIT_ID}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)
    return root


def run_once(workdir: Path, kind: str, slots: int, seconds: float, n: int) -> dict[str, float]:
    project = make_project(workdir / f"{kind}-{slots}-{seconds}-{time.monotonic_ns()}",
                           kind, slots, seconds, n)  # fmt: skip
    env = {**os.environ, **GIT_ID, **(RAY_ENV if kind == "ray" else {})}
    env.pop("RAY_ADDRESS", None)  # no `address`: ratchet starts a local cluster of its own
    result = subprocess.run([sys.executable, "-m", "ratchet", "run"], cwd=project, env=env,
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{kind} x{slots} failed: {result.stderr[-500:]}")
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    start, end, proposing = db.execute(
        "SELECT MIN(started_at), MAX(ended_at), SUM(cost_seconds) FROM experiments"
        " WHERE proposer != 'baseline'"
    ).fetchone()
    measuring = db.execute(
        "SELECT SUM(m.duration) FROM measurements m JOIN experiments e ON e.id = m.experiment"
        " WHERE e.proposer != 'baseline'"
    ).fetchone()[0]
    db.close()
    wall = end - start
    return {"per_second": n / wall, "wall": wall,
            "overhead_ms": (slots * wall - proposing - measuring) / n * 1000}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=EXPERIMENTS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    contenders = [("local", 1, 1.0), ("local", 2, 1.0), ("local", 4, 0.1)]
    if ray:
        contenders += [("ray", 1, 1.0), ("ray", 2, 1.0)]
    samples: dict[str, list[dict[str, float]]] = {f"{k} x{s} {t:g}s": [] for k, s, t in contenders}
    with tempfile.TemporaryDirectory(prefix="ratchet-throughput-") as tmp:
        for round_ in range(args.rounds):
            order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
            for kind, slots, seconds in order:
                figures = run_once(Path(tmp), kind, slots, seconds, args.experiments)
                samples[f"{kind} x{slots} {seconds:g}s"].append(figures)
                print(f"round {round_ + 1}: {kind} x{slots} on a {seconds:g}s metric: "
                      f"{figures['per_second']:.3f} experiments/s", flush=True)  # fmt: skip
    median = {name: {key: statistics.median(f[key] for f in runs) for key in runs[0]}
              for name, runs in samples.items()}  # fmt: skip
    report: dict[str, float] = {
        "local_2_over_1": median["local x2 1s"]["per_second"] / median["local x1 1s"]["per_second"],
        "local_4_overhead_ms": median["local x4 0.1s"]["overhead_ms"],
        "local_1_overhead_ms": median["local x1 1s"]["overhead_ms"],
    }
    if ray:
        report["ray_2_over_1"] = (
            median["ray x2 1s"]["per_second"] / median["ray x1 1s"]["per_second"]
        )
        report["ray_2_over_local_1"] = (
            median["ray x2 1s"]["per_second"] / median["local x1 1s"]["per_second"]
        )
    print()
    print("| contender | experiments/s | overhead per experiment |")
    print("| --- | ---: | ---: |")
    for name, figures in median.items():
        print(f"| {name} | {figures['per_second']:.3f} | {figures['overhead_ms']:.1f} ms |")
    print()
    print(f"2 slots / 1 slot, local: {report['local_2_over_1']:.2f}x (target >= {TARGET_LOCAL})")
    if ray:
        print(f"2 slots / 1 slot, Ray:   {report['ray_2_over_1']:.2f}x (target >= {TARGET_RAY}); "
              f"Ray 2 slots / local 1 slot: {report['ray_2_over_local_1']:.2f}x")  # fmt: skip
    print(f"overhead with 4 slots on a 0.1 s metric: {report['local_4_overhead_ms']:.1f} ms "
          "per experiment")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"median": median, "report": report}, indent=2))


if __name__ == "__main__":
    main()
