"""Checks the workspace (the working directory); exit status 0 means passed."""

import os
import subprocess
import sys
from pathlib import Path


def fail(why: str) -> None:
    print(f"FAILED: {why}")
    sys.exit(1)


def read(name: str) -> str:
    path = Path(name)
    if not path.is_file():
        fail(f"{name} does not exist")
    return path.read_text(errors="replace")


script = Path("count_words.sh")
if not script.is_file():
    fail("count_words.sh does not exist")
if not os.access(script, os.X_OK):
    fail("count_words.sh is not executable")
samples = Path(__file__).resolve().parent / "samples"
for sample in sorted(samples.iterdir()):
    expected = len(sample.read_text().split())
    try:
        done = subprocess.run(
            ["./count_words.sh", str(sample)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"./count_words.sh {sample.name} did not run: {exc!r}")
    if done.returncode != 0:
        fail(f"./count_words.sh {sample.name} exited {done.returncode}: {done.stderr[-300:]}")
    if done.stdout.strip() != str(expected):
        fail(f"./count_words.sh {sample.name} printed {done.stdout[:80]!r}, expected {expected}")
print("passed")
