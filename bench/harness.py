"""Harness mode: trial throughput of the local runner, and false keeps on coin flips.

    python bench/harness.py [--tasks 16] [--wait 1.0] [--experiments 600]

1. Trials per minute at concurrency 1 and 4: the `local` runner (process layer) runs a
   stub agent that waits `--wait` seconds on I/O (a model call, say) on `--tasks` tasks,
   each verified by a one-line `test.sh`. Goal: concurrency 4 at least 3.5 times faster.
2. False keeps per 60 experiments on a suite of 10 coin-flip tasks no change affects:
   the paired sequential test (`ratchet.suite.paired.sequential`, the function the suite
   judge runs) at the default confidence 0.99, each candidate against an incumbent whose
   trials are reused as the judge reuses them (a false keep becomes the incumbent, its
   lucky trials included). Goal: at most 0.3.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ratchet.sandbox import ProcessSandbox
from ratchet.spec import SuiteSpec
from ratchet.suite import paired
from ratchet.suite.local import LocalRunner
from ratchet.suite.runners import TrialRequest
from ratchet.suite.tasks import Split, Task

AGENT = "import time\n\ndef run(instruction, workspace):\n    time.sleep({wait})\n"
TEST = '#!/bin/sh\necho 1 > "$RATCHET_LOGS/verifier/reward.txt"\n'


def throughput(root: Path, tasks: int, wait: float, concurrency: int) -> float:
    tree = root / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "agent.py").write_text(AGENT.format(wait=wait))
    made = []
    for i in range(tasks):
        folder = root / "tasks" / f"t{i}"
        (folder / "tests").mkdir(parents=True, exist_ok=True)
        (folder / "instruction.md").write_text("wait\n")
        (folder / "tests" / "test.sh").write_text(TEST)
        made.append(Task(f"t{i}", folder, Split.SEARCH, 60.0, 60.0))
    spec = SuiteSpec(tasks="tasks", agent="agent.py:run", concurrency=concurrency)
    runner = LocalRunner(spec, ProcessSandbox(), root / "scratch")
    requests = [TrialRequest(t, 0, root / "out" / str(concurrency) / t.name) for t in made]
    started = time.monotonic()
    results = runner.run_trials(requests, tree)
    elapsed = time.monotonic() - started
    assert all(r.status == "passed" for r in results), [r.error for r in results]
    return len(results) / elapsed * 60


def false_keeps(experiments: int, tasks: int = 10, confidence: float = 0.99) -> float:
    rng = random.Random(13)
    names = [f"t{i}" for i in range(tasks)]
    incumbent: dict[tuple[str, int], float] = {}
    keeps = 0

    def flip() -> float:
        return float(rng.random() < 0.5)

    for _ in range(experiments):
        mine: dict[tuple[str, int], float] = {}

        def trial_pairs(
            chosen: Sequence[str],
            look: int,
            mine: dict[tuple[str, int], float] = mine,
            incumbent: dict[tuple[str, int], float] = incumbent,
        ) -> list[paired.Pair]:
            found = []
            for name in chosen:
                mine[(name, look)] = flip()
                theirs = incumbent.setdefault((name, look), flip())
                found.append(paired.Pair(name, look, mine[(name, look)], theirs))
            return found

        verdict, _, _ = paired.sequential(names, 1 - confidence, 3, trial_pairs)
        if verdict == "keep":
            keeps += 1
            incumbent = dict(mine)
    return keeps / experiments * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--wait", type=float, default=1.0)
    parser.add_argument("--experiments", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        one = throughput(Path(folder) / "c1", args.tasks, args.wait, 1)
        four = throughput(Path(folder) / "c4", args.tasks, args.wait, 4)
    ratio = four / one
    print(f"trials per minute: concurrency 1 {one:.1f}, concurrency 4 {four:.1f}, "
          f"ratio {ratio:.2f} (goal >= 3.5): {'PASS' if ratio >= 3.5 else 'MISS'}")  # fmt: skip
    rate = false_keeps(args.experiments)
    print(f"false keeps per 60 experiments on coin-flip tasks: {rate:.3f} over "
          f"{args.experiments} experiments (goal <= 0.3): {'PASS' if rate <= 0.3 else 'MISS'}")  # fmt: skip
    return 0 if ratio >= 3.5 and rate <= 0.3 else 1


if __name__ == "__main__":
    sys.exit(main())
