"""What bringing a worktree back to the candidate's tree costs, per measurement.

Between a measurement's command and its evaluate step, and again after the measurement,
ratchet walks the worktree (one `lstat` per path, no reads) and undoes what the command
did (ratchet.restore). This times the three calls a measurement makes (snapshot, settle
before the evaluator, settle after) on a git worktree of a small project and on one that
also holds a protected data folder of many files and one large file, with nothing
changed and with a hostile command's changes (a planted `json.py`, a `__pycache__`, one
rewritten editable file). The median of `--repeats` is printed.

    python bench/evaluator_restore.py [--files 20000] [--big-mb 200] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pygit2

from ratchet.restore import GitPristine, prune, settle, take_snapshot, whole_folders

GIT_ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}  # fmt: skip


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                         env={**os.environ, **GIT_ENV})  # fmt: skip
    return out.stdout.strip()


def project(root: Path, data_files: int, big_mb: int) -> tuple[Path, str]:
    """A repository with a few source files (and a data folder), and a worktree of it."""
    root.mkdir()
    git(root, "init", "-q")
    for i in range(30):
        (root / f"mod{i}.py").write_text(f"X = {i}\n" * 50)
    if data_files:
        (root / "data").mkdir()
        for i in range(data_files):
            (root / "data" / f"{i:06}.txt").write_text(f"{i}\n")
    if big_mb:
        with open(root / "data" / "big.bin", "wb") as handle:
            handle.truncate(big_mb << 20)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    worktree = root.parent / f"{root.name}-wt"
    git(root, "worktree", "add", "-q", "--detach", str(worktree), "HEAD")
    return worktree, git(root, "rev-parse", "HEAD")


def timed(step: Callable[[], object], before: Callable[[], None], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def hostile(worktree: Path) -> None:
    (worktree / "json.py").write_text("def dumps(o): return '{}'\n")
    (worktree / "__pycache__").mkdir(exist_ok=True)
    (worktree / "__pycache__" / "mod1.cpython-311.pyc").write_bytes(b"forged")
    (worktree / "mod2.py").write_text("X = -1\n")


def time_case(worktree: Path, head: str, repeats: int,
              protected: list[str]) -> tuple[int, float, float, float]:  # fmt: skip
    """Paths walked; ms for the snapshot a measurement starts with, and for a settle."""
    pristine = GitPristine(pygit2.Repository(str(worktree)), head)
    skip = whole_folders(protected)
    snap = take_snapshot(worktree, skip)
    start_ms = timed(lambda: prune(worktree, take_snapshot(worktree, skip), pristine),
                     lambda: None, repeats)  # fmt: skip
    clean_ms = timed(lambda: settle(worktree, snap, pristine, (), protected), lambda: None,
                     repeats)  # fmt: skip
    hostile_ms = timed(lambda: settle(worktree, snap, pristine, (), protected),
                       lambda: hostile(worktree), repeats)  # fmt: skip
    return len(snap.entries), start_ms, clean_ms, hostile_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; median of {args.repeats}, milliseconds")
    print(f"{'tree':<50} {'paths':>7} {'snapshot+prune':>15} {'settle, clean':>14} "
          f"{'settle, hostile':>16}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        big = f"+ data/ of {args.files} files, {args.big_mb} MB"
        cases = [("small (30 files)", 0, 0, [[]]), (big, args.files, args.big_mb, [[], ["data"]])]
        for i, (label, files, mb, protections) in enumerate(cases):
            worktree, head = project(Path(tmp) / f"p{i}", files, mb)
            for protected in protections:
                shown = f"{label}, protected {protected}" if protected else label
                paths, start_ms, clean_ms, hostile_ms = time_case(worktree, head, args.repeats,
                                                                  protected)  # fmt: skip
                print(f"{shown:<50} {paths:>7} {start_ms:>15.1f} {clean_ms:>14.1f} "
                      f"{hostile_ms:>16.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
