"""`ratchet demo`: the bundled training example, made into a git repository."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from importlib.resources import as_file, files
from pathlib import Path

from ratchet import workspace
from ratchet.errors import UsageError
from ratchet.spec import SPEC_FILE

EXAMPLE = "examples/demo"


def prepare_demo(directory: Path) -> Path:
    """Copy the example into `directory` and commit it; an earlier demo there is reused."""
    if (directory / SPEC_FILE).is_file() and (directory / ".git").exists():
        return directory  # run again: the same run continues up to its budget
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and is not empty; choose another directory")
    with as_file(files("ratchet").joinpath(EXAMPLE)) as source:
        shutil.copytree(
            source,
            directory,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    # the demo's commands run with this interpreter, which has numpy, whatever PATH says
    spec = directory / SPEC_FILE
    spec.write_text(spec.read_text().replace('"python3 ', f'"{shlex.quote(sys.executable)} '))
    workspace.ensure_ignored(directory)
    env = workspace.FALLBACK_IDENTITY
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-q", "-m", "The ratchet demo: a small numpy training script"],
    ):
        subprocess.run(
            ["git", *args],
            cwd=directory,
            check=True,
            capture_output=True,
            env={**os.environ, **env},
        )
    return directory
