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
    "2024-03-05",
    "2023-12-31",
    "2024-07-04",
    "2025-01-09",
    "2022-11-02",
    "2024-02-29",
    "2021-06-15",
    "2025-10-01",
]
lines = [line.strip() for line in read("dates_iso.txt").splitlines() if line.strip()]
if lines != expected:
    wrong = [
        f"line {i + 1}: {g!r} (expected {e!r})"
        for i, (g, e) in enumerate(zip(lines, expected, strict=False))
        if g != e
    ]
    fail(f"dates_iso.txt has {len(lines)} dates, expected {len(expected)}; " + "; ".join(wrong[:4]))
print("passed")
