"""`ratchet init --example NAME`: a bundled example project, written into a folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib.resources import as_file, files
from pathlib import Path

from ratchet import workspace
from ratchet.errors import UsageError

# name -> (folder under src/ratchet/examples, what it is)
EXAMPLES = {
    "harness": ("examples/harness", "a task agent improved against a suite of Harbor tasks"),
}
# Paths of an example that git must not track. A suite's tasks stay out of git: a
# tracked holdout task would be in every proposer's worktree, and ratchet refuses that.
UNTRACKED = {"harness": ["tasks/"]}
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def write_example(name: str, directory: Path) -> bool:
    """Copy example `name` into `directory`, which must hold nothing but `.git`.
    A folder outside any repository becomes one, with the example committed;
    inside a repository the files are left for the user to commit. Returns
    whether it committed."""
    if name not in EXAMPLES:
        known = ", ".join(sorted(EXAMPLES))
        raise UsageError(f"no example named {name!r}; the examples are: {known}")
    present = sorted(p.name for p in directory.iterdir() if p.name != ".git")
    if present:
        raise UsageError(
            f"{directory} is not empty (it has {present[0]}); "
            "run 'ratchet init --example' in an empty folder"
        )
    top = _repository_top(directory)
    if top is not None and top != directory.resolve():
        raise UsageError(
            f"{directory} is inside the repository {top}; run it at the repository's top "
            "or in a new folder, where ratchet.toml belongs"
        )
    with as_file(files("ratchet").joinpath(EXAMPLES[name][0])) as source:
        shutil.copytree(source, directory, dirs_exist_ok=True, ignore=_SKIP)
    _restore_modes(directory)
    workspace.ensure_ignored(directory)
    _ignore(directory, UNTRACKED.get(name, []))
    if top is not None:
        return False
    _git(directory, "init", "-q", "-b", "main")
    _git(directory, "add", "-A")
    configured = (
        os.environ.get("GIT_AUTHOR_EMAIL")
        or _git(directory, "config", "user.email", check=False).stdout.strip()
    )
    # the user's own identity when git has one, ratchet's otherwise
    identity = {} if configured else workspace.FALLBACK_IDENTITY
    _git(directory, "commit", "-q", "-m", f"The ratchet {name} example", env=identity)
    return True


def _git(
    directory: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=directory, check=check, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})  # fmt: skip


def _ignore(directory: Path, paths: list[str]) -> None:
    gitignore = directory / ".gitignore"
    text = gitignore.read_text() if gitignore.exists() else ""
    missing = [p for p in paths if p not in text.splitlines()]
    if missing:
        prefix = "" if not text or text.endswith("\n") else "\n"
        gitignore.write_text(text + prefix + "".join(f"{p}\n" for p in missing))


def _repository_top(directory: Path) -> Path | None:
    found = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=directory,
                           capture_output=True, text=True, check=False)  # fmt: skip
    return Path(found.stdout.strip()).resolve() if found.returncode == 0 else None


def _restore_modes(directory: Path) -> None:
    """Scripts stay executable even where an installer dropped the bit: Harbor runs
    `tests/test.sh` and `solution/solve.sh` directly."""
    for script in directory.rglob("*.sh"):
        script.chmod(script.stat().st_mode | 0o755)
