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


text = read("greeting.txt")
if text not in ("Hello, ratchet!", "Hello, ratchet!\n"):
    fail(f"greeting.txt holds {text[:80]!r}, not the line 'Hello, ratchet!'")
print("passed")
