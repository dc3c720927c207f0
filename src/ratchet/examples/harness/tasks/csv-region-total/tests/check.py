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


text = read("west_total.txt").strip()
if text != "9236.67":
    fail(f"west_total.txt holds {text[:40]!r}, not the west total")
print("passed")
