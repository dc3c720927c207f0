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


expected = [
    "ada@example.org",
    "alan@bletchley.uk",
    "barbara@mit.edu",
    "edsger@tue.nl",
    "grace@navy.mil",
    "ken@bell-labs.com",
]
lines = read("unique_emails.txt").split("\n")
if lines and lines[-1] == "":
    lines = lines[:-1]
if lines != expected:
    fail(f"unique_emails.txt holds {lines[:10]}, expected {expected}")
print("passed")
