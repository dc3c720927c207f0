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


try:
    got = json.loads(read("people.json"))
except json.JSONDecodeError as exc:
    fail(f"people.json is not JSON: {exc}")
expected = json.loads(
    '[{"name": "Ada Lovelace", "age": 36, "city": "London"}, {"name": "Grace Hopper", "age": 85, "city": "Arlington"}, {"name": "Katherine Johnson", "age": 101, "city": "Hampton"}, {"name": "Alan Turing", "age": 41, "city": "Wilmslow"}, {"name": "Margaret Hamilton", "age": 88, "city": "Boston"}, {"name": "John Lewis", "age": 80, "city": "Washington, D.C."}, {"name": "Edsger Dijkstra", "age": 72, "city": "Nuenen"}, {"name": "Barbara Liskov", "age": 86, "city": "Cambridge"}]'
)
if got != expected:
    fail(f"people.json differs from the rows of people.csv; got {str(got)[:300]}")
print("passed")
