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


text = read("p95.txt").strip()
if text != "214":
    fail(f"p95.txt holds {text[:40]!r}, not the nearest-rank p95 of successful requests")
print("passed")
