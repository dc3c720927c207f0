"""Checks the workspace (the working directory); exit status 0 means passed."""

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


text = read("largest.txt").strip()
if text != "bundle/data/b.csv":
    fail(f"largest.txt holds {text[:80]!r}, not the largest file's path in the archive")
print("passed")
