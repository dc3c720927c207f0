"""Checks the workspace (the working directory); exit status 0 means passed."""

import json
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


expected = ["the 17", "fox 5", "and 4", "hound 4", "wood 4"]
out = Path(sys.argv[1])
path = Path("top_words.txt")
lines = path.read_text(errors="replace").split("\n") if path.is_file() else []
lines = [line.strip() for line in lines if line.strip()]
right = sum(1 for got, want in zip(lines, expected, strict=False) if got == want)
passed = lines == expected
out.write_text(json.dumps({"reward": 1.0 if passed else 0.0, "lines_right": right}))
if not path.is_file():
    print("FAILED: top_words.txt does not exist")
elif not passed:
    print(f"FAILED: top_words.txt holds {lines[:6]}; {right} of 5 lines right")
else:
    print("passed")
