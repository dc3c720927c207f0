"""ratchet on a long history: a journal of 100,000 experiments, and what each command costs.

A real project is made and a real run measures its baseline and two experiments; then
N experiments are written straight into its journal, as a long night would leave them
(knobs trials with their params, patches of ~1.5 KB, measurement outputs of ~3 KB, a
keep every 2,000 experiments with a real commit on the run's branch). Then it times:

- `ratchet --help`, `status`, `log --limit 20`, `show ID` and `review` (median of a few
  runs of each, as a user types them: a fresh process each);
- a resumed `ratchet run`, from its start to the first new experiment's row in the
  journal, and its peak memory (the whole process), with the `knobs` proposer and with
  the `command` proposer, and once more after a run was killed outright (`kill -9`)
  mid-experiment, so that the start checks the journal a crash left;
- `python -c pass`, the floor under every command on the machine at hand.

Commands run as an installed ratchet does, with their bytecode cached
(PYTHONDONTWRITEBYTECODE, where the environment sets it, is dropped for them), each
once untimed first.

    python bench/big_journal.py [--experiments 100000] [--repeats 5] [--dir PATH]
                                [--json PATH]

With `--dir`, the project is kept there (and reused when it already holds a journal of
that size). Stdlib and ratchet only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

RUN = "default"
KEEP_EVERY = 2000
DECISIONS = [  # (decision, weight): a long night's mix
    ("discard", 70),
    ("crash", 8),
    ("no-change", 5),
    ("timeout", 3),
    ("duplicate", 5),
    ("invalid-proposal", 4),
    ("no-metric", 3),
    ("stale", 2),
]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
SPEC = """
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = "{python} score.py"
name = "score"
goal = "minimize"
budget = "20s"
[proposer]
{proposer}
"""
KNOBS = 'kind = "knobs"\nseed = 1'
COMMAND = 'kind = "command"\ncommand = "{python} propose.py"'
PROPOSE = (  # the command proposer: a new Y (sh has no $RANDOM)
    "import random, re\n"
    "text = open('value.py').read()\n"
    "open('value.py', 'w').write(re.sub(r'Y = \\d+', f'Y = {random.randint(1, 50)}', text))\n"
)
VALUE = "X = {x}  # ratchet: knob float 0..10\nY = {y}  # ratchet: knob int 1..50\n"
SCORE = "from value import X, Y\nprint(f'score: {(X - 2) ** 2 + (Y - 7) ** 2 / 100}')\n"


def child_env() -> dict[str, str]:
    """As an installed ratchet runs: its modules' bytecode cached beside them (where the
    environment sets PYTHONDONTWRITEBYTECODE, ratchet's modules would be compiled at
    every command; the libraries' own caches are read either way)."""
    env = {**os.environ, **GIT_ENV}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def git(root: Path, *args: str, data: str | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(["git", *args], cwd=root, input=data, capture_output=True, text=True,
                         env=env, check=True)  # fmt: skip
    return out.stdout.strip()


def ratchet(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_env()
    return subprocess.run([sys.executable, "-m", "ratchet", *args], cwd=root,
                          capture_output=True, text=True, env=env)  # fmt: skip


def make_project(root: Path) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    files = {
        ".gitignore": ".ratchet/\n",
        "value.py": VALUE.format(x=5.0, y=20),
        "score.py": SCORE,
        "propose.py": PROPOSE,
        "ratchet.toml": SPEC.format(python=sys.executable, proposer=KNOBS),
    }
    for name, text in files.items():
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    done = ratchet(root, "run", "--max-experiments", "2")
    if done.returncode != 0:
        raise SystemExit(f"the first run failed: {done.stderr or done.stdout}")


def patch_text(rng: random.Random, x: float, y: int) -> str:
    """A diff as a proposer's would be: the knob lines and some surrounding code."""
    body = "".join(
        f" def layer_{i}(h):\n-    return h * {rng.random():.4f}\n+    return h * {rng.random():.4f}\n"
        for i in range(18)
    )
    return (
        "diff --git a/value.py b/value.py\n--- a/value.py\n+++ b/value.py\n@@ -1,2 +1,2 @@\n"
        f"-X = 5.0  # ratchet: knob float 0..10\n+X = {x}  # ratchet: knob float 0..10\n"
        f"-Y = 20  # ratchet: knob int 1..50\n+Y = {y}  # ratchet: knob int 1..50\n" + body
    )


def output_text(rng: random.Random, value: float | None) -> str:
    lines = [
        f"step {s:05d} | loss {rng.random() * 4:.4f} | lr {rng.random() / 100:.2e} | "
        f"tok/s {rng.randint(90000, 120000)}"
        for s in range(0, 4000, 100)
    ]
    return "\n".join(lines) + (f"\nscore: {value}\n" if value is not None else "\nTraceback...\n")


class Keeps:
    """Real commits for the keeps, each on the last: the run's branch ends at the newest."""

    def __init__(self, root: Path, tip: str) -> None:
        self.root, self.tip = root, tip
        self.entries = git(root, "ls-tree", tip).splitlines()

    def commit(self, x: float, y: int, message: str) -> str:
        blob = git(self.root, "hash-object", "-w", "--stdin", data=VALUE.format(x=x, y=y))
        entries = [e for e in self.entries if not e.endswith("\tvalue.py")]
        entries.append(f"100644 blob {blob}\tvalue.py")
        tree = git(self.root, "mktree", data="\n".join(entries) + "\n")
        self.tip = git(self.root, "commit-tree", tree, "-p", self.tip, "-m", message)
        return self.tip


def fill(root: Path, count: int, seed: int = 0) -> None:
    """Write `count` decided experiments into the run, as the engine would have."""
    rng = random.Random(seed)
    db = sqlite3.connect(root / ".ratchet" / "journal.db")
    tip, best = db.execute(
        "SELECT commit_sha, value FROM experiments WHERE run = ? AND decision = 'keep'"
        " ORDER BY id DESC LIMIT 1",
        (RUN,),
    ).fetchone()
    keeps = Keeps(root, tip)
    names, weights = zip(*DECISIONS, strict=True)
    now = time.time() - count * 30
    db.execute("BEGIN")
    for i in range(count):
        x, y = round(rng.uniform(0, 10), 4), rng.randint(1, 50)
        value = (x - 2) ** 2 + (y - 7) ** 2 / 100
        decision = "keep" if (i + 1) % KEEP_EVERY == 0 else rng.choices(names, weights)[0]
        measured = decision in ("keep", "discard", "duplicate", "stale")
        if decision == "keep":
            value = best * 0.999
        rationale = (
            f"knobs: X 5.0 -> {x}, Y 20 -> {y}; the loss curve flattened early, so a "
            "smaller step may help the last third of training"
        )
        why = {
            "keep": f"improved {best:.6g} -> {value:.6g}, beyond the noise (p < 0.05)",
            "discard": f"{value:.6g} is not better than the incumbent {best:.6g}",
            "crash": "the metric command exited 1: Traceback (most recent call last) ...",
            "no-change": "the proposal changed nothing",
            "timeout": "the metric command ran past its budget of 20s",
            "duplicate": "the same patch as experiment #17",
            "invalid-proposal": "the proposer failed: the editable files have no knob left",
            "no-metric": "the metric command printed no 'score:' line",
            "stale": "the incumbent moved on three times while it was measured",
        }[decision]
        commit = keeps.commit(x, y, rationale) if decision == "keep" else None
        start = now + i * 30
        cursor = db.execute(
            "INSERT INTO experiments (run, slot, parent, commit_sha, proposer, rationale,"
            " patch, files, meta, cost_seconds, stage, decision, why, value, metrics,"
            " duration, started_at, ended_at, patch_hash) VALUES (?, 0, ?, ?, 'knobs', ?, ?,"
            " ?, ?, 0.01, 'done', ?, ?, ?, ?, 29.5, ?, ?, ?)",
            (
                RUN,
                tip,
                commit,
                rationale,
                patch_text(rng, x, y),
                json.dumps(["value.py"]),
                json.dumps({"params": {"value.py:X": x, "value.py:Y": y}, "trial": i}),
                decision,
                why,
                value if measured else None,
                json.dumps({"score": value} if measured else {}),
                start,
                start + 29.5,
                f"{rng.getrandbits(64):016x}",
            ),
        )
        experiment = cursor.lastrowid
        statuses = ["ok", "ok", "confirm"] if decision == "keep" else ["ok"]
        for k, status in enumerate(statuses):
            db.execute(
                "INSERT INTO measurements (experiment, seed, status, value, metrics, duration,"
                " output, started_at) VALUES (?, ?, ?, ?, ?, 9.8, ?, ?)",
                (
                    experiment,
                    k,
                    status if measured else "crash",
                    value if measured else None,
                    json.dumps({"score": value} if measured else {}),
                    output_text(rng, value if measured else None),
                    start + k * 10,
                ),
            )
        if decision == "keep":
            tip, best = commit, value
    db.execute("COMMIT")
    db.close()
    git(root, "update-ref", f"refs/heads/ratchet/{RUN}", tip)
    # as the night that wrote them leaves the journal: its results.tsv written row by row,
    # the elapsed time's partial sum kept as it decided, the file closed as a run closes it
    from ratchet.journal import Journal
    from ratchet.results import export_tsv

    journal = Journal(root / ".ratchet" / "journal.db", verify=True)
    journal.counts(RUN)
    export_tsv(journal, RUN, "score", root / ".ratchet" / "results.tsv", force=True)
    journal.close()


def timed(root: Path, *args: str, python: list[str] | None = None) -> tuple[float, float]:
    """`ratchet ARGS`: its wall seconds, and its CPU seconds (user and system), which a
    machine shared with other work inflates far less than the wall time."""
    env = child_env()
    start = time.perf_counter()
    command = python or [sys.executable, "-m", "ratchet", *args]
    child = subprocess.Popen(command, cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"ratchet {' '.join(args)} failed (exit {child.returncode})")
    return elapsed, usage.ru_utime + usage.ru_stime


def newest(db_path: Path) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM experiments").fetchone()[0])
    finally:
        db.close()


def resume(root: Path, proposer: str) -> dict[str, float]:
    """A resumed run of one more experiment: seconds to its first new experiment's row,
    and the process's peak memory."""
    spec = SPEC.format(python=sys.executable, proposer=proposer.format(python=sys.executable))
    if (root / "ratchet.toml").read_text() != spec or not (root / "propose.py").exists():
        (root / "ratchet.toml").write_text(spec)
        (root / "propose.py").write_text(PROPOSE)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "bench: the proposer")
    db_path = root / ".ratchet" / "journal.db"
    decided = sqlite3.connect(db_path).execute(
        "SELECT COUNT(*) FROM experiments WHERE decision IS NOT NULL").fetchone()[0]  # fmt: skip
    env = child_env()
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "ratchet", "run", "--max-experiments", str(decided + 1)],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    first, usage = None, None
    brief = root / ".ratchet" / "brief-0.json"
    brief.unlink(missing_ok=True)
    # the first proposal's brief, written once its experiment's row is: the journal itself
    # is not opened (a reader there would keep the run from checkpointing it whole)
    while usage is None:  # wait4, not poll: the child's own peak memory comes with it
        pid, _, rusage = os.wait4(child.pid, os.WNOHANG)
        if first is None and brief.exists() and brief.stat().st_size > 0:
            first = time.perf_counter() - start
        if pid == child.pid:
            usage = rusage
        else:
            time.sleep(0.005)
    child.returncode = 0  # reaped above
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime  # the whole run, its one experiment included
    if first is None:
        raise SystemExit("the resumed run started no experiment")
    return {"first_experiment_s": round(first, 3), "peak_mib": round(peak, 1),
            "cpu_s_whole_run": round(cpu, 3)}  # fmt: skip


def run_and_measure(root: Path, repeats: int) -> dict[str, object]:
    some = (
        sqlite3.connect(root / ".ratchet" / "journal.db")
        .execute("SELECT id FROM experiments WHERE decision = 'discard' ORDER BY id DESC LIMIT 1")
        .fetchone()[0]
    )
    commands = {
        "--help": ["--help"],
        "status": ["status"],
        "log --limit 20": ["log", "--limit", "20"],
        f"show {some}": ["show", str(some)],
        "review": ["review"],
    }
    for args in commands.values():  # once untimed: the bytecode cache warmed, as in use
        timed(root, *args)
    warm = "import ratchet.engine, ratchet.proposers.knobs, ratchet.proposers.command"
    timed(root, python=[sys.executable, "-c", warm])  # the run's modules too
    times = {
        label: [timed(root, *args) for _ in range(repeats)] for label, args in commands.items()
    }
    # the floor under every command: the interpreter's own start on this machine
    times["python -c pass"] = [timed(root, python=[sys.executable, "-c", "pass"])
                               for _ in range(repeats)]  # fmt: skip
    results: dict[str, object] = {
        "journal_mib": round((root / ".ratchet" / "journal.db").stat().st_size / 2**20, 1),
        "experiments": newest(root / ".ratchet" / "journal.db"),
        "load_average": os.getloadavg()[0],
        "commands_median_wall_s": {
            k: round(statistics.median(w for w, _ in v), 3) for k, v in times.items()
        },
        "commands_median_cpu_s": {
            k: round(statistics.median(c for _, c in v), 3) for k, v in times.items()
        },
    }
    results["resume_knobs"] = resume(root, KNOBS)
    results["resume_command"] = resume(root, COMMAND)
    kill_a_run(root)
    results["resume_command_after_kill_9"] = resume(root, COMMAND)
    return results


def kill_a_run(root: Path) -> None:
    """A run killed outright (`kill -9`) once its first new experiment has begun: the
    journal is left open, as after a crash, for the next start to check."""
    decided = sqlite3.connect(root / ".ratchet" / "journal.db").execute(
        "SELECT COUNT(*) FROM experiments WHERE decision IS NOT NULL").fetchone()[0]  # fmt: skip
    brief = root / ".ratchet" / "brief-0.json"
    brief.unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-m", "ratchet", "run", "--max-experiments", str(decided + 50)],
        cwd=root, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while not (brief.exists() and brief.stat().st_size > 0):
        if child.poll() is not None:
            raise SystemExit("the run to kill ended first")
        time.sleep(0.005)
    child.kill()
    child.wait()


@contextlib.contextmanager
def built_project(experiments: int, folder: Path | None = None) -> Iterator[Path]:
    """The project with a journal of `experiments` experiments: built in `folder` (and
    reused when it already holds a journal), else in a temporary folder removed after."""
    with tempfile.TemporaryDirectory() as scratch:
        root = (folder or Path(scratch)) / "project"
        if not (root / ".ratchet" / "journal.db").exists():
            start = time.perf_counter()
            make_project(root)
            fill(root, experiments)
            print(f"built {experiments} experiments in {time.perf_counter() - start:.1f}s")
        yield root


def bench_main(doc: str, repeats: int, measure: Callable[[Path, int], dict[str, object]]) -> None:
    """The command line both benchmarks share: `--experiments`, `--repeats` (`repeats` by
    default), `--dir` and `--json`; the results are printed, and written to `--json`."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--experiments", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with built_project(args.experiments, args.dir) as root:
        results = measure(root, args.repeats)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    bench_main(__doc__, 5, run_and_measure)


if __name__ == "__main__":
    main()
