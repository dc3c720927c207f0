"""A project whose metric is noisy: loss = 5 * (X - 2)^2 + N(0, 1), seeded by
$RATCHET_SEED (which ratchet sets for every measurement), so every test is reproducible."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import make_project

# loss = 5 * (X - 2)^2 + N(0, 1): X = 2 is a real improvement of about 45 sd over X = 5
NOISY_SCORE = """
import os, random
from value import X
r = random.Random(int(os.environ["RATCHET_SEED"]))
print(f"seed: {os.environ['RATCHET_SEED']}")
print(f"loss: {5 * (X - 2) ** 2 + r.gauss(0, 1):.6f}")
"""


def noisy_project(tmp_path: Path, propose: str, extra: str = "", experiments_: int = 1,
                  files: dict[str, str] | None = None, run_extra: str = "") -> Path:  # fmt: skip
    """`extra` goes in `[metric]`; `run_extra` in `[run]` (and may open sections after it)."""
    spec = f"""
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
protected = ["score.py"]
[metric]
command = "{sys.executable} score.py"
name = "loss"
budget = "20s"
{extra}
[run]
max_experiments = {experiments_}
{run_extra}
[proposer]
kind = "command"
command = '''{propose}'''
"""
    all_files = {"value.py": "X = 5\n", "score.py": NOISY_SCORE, **(files or {})}
    return make_project(tmp_path / "p", all_files, spec)
