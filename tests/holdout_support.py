"""A project with a holdout (`[metric] confirm`): its one experiment improves the search
metric, loss = (X - 2)^2, from X = 5 to X = 3, while the holdout is best at X = `best`.
Shared by the tests of the overfit decision and of holdout confirmation."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import make_project

HOLDOUT_SPEC = f"""
[scope]
editable = ["value.py"]
protected = ["score.py", "holdout.py"]
[metric]
command = "{sys.executable} score.py"
confirm = "{sys.executable} holdout.py"
name = "loss"
[run]
max_experiments = 1
[proposer]
kind = "command"
command = "echo 'X = 3' > value.py"
"""


def holdout_project(root: Path, best: int) -> Path:
    """The project made at `root`: X = 3 is better on the search metric; on the holdout
    it is better only when `best` is nearer 3 than 5."""
    files = {
        "value.py": "X = 5\n",
        "score.py": "from value import X\nprint(f'loss: {(X - 2) ** 2}')\n",
        "holdout.py": f"from value import X\nprint(f'loss: {{(X - {best}) ** 2}}')\n",
    }
    return make_project(root, files, HOLDOUT_SPEC)
