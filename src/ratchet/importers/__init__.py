"""`ratchet init --from autoresearch|openevolve|harbor [PATH]`: a spec for a set-up made
for another tool, written from what the project's own files say.

Each importer reads the source's files and returns the `ratchet.toml` text and the
sentences `init` prints about what it assumed; it changes no file of the project (the
autoresearch and OpenEvolve importers may add a directive file, said so).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ratchet.errors import UsageError

SOURCES = ("autoresearch", "openevolve", "harbor")


@dataclass
class Imported:
    """What an importer made: the spec's text, notes for the user, files it wrote."""

    spec: str
    notes: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)


def python_command(project: Path) -> str:
    """The interpreter a metric command should name: the project's own `.venv` when it
    has one (autoresearch's `uv run` needs the network to sync a fresh worktree, which
    the sandbox does not give), else `python3` when that is the Python running ratchet,
    else this Python's path."""
    venv = project / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    found = shutil.which("python3")
    if found and os.path.realpath(found) == os.path.realpath(sys.executable):
        return "python3"
    return sys.executable


def toml_string(text: str) -> str:
    """A TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(toml_string(i) for i in items) + "]"


def relative(project: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(project.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"{path} is outside the project {project}") from None


def import_spec(source: str, project: Path, path: Path | None) -> Imported:
    """The spec for the project at `project`, from a set-up of `source` at `path`."""
    from ratchet.importers import autoresearch, harbor, openevolve

    importers: dict[str, Callable[[Path, Path], Imported]] = {
        "autoresearch": autoresearch.import_autoresearch,
        "openevolve": openevolve.import_openevolve,
        "harbor": harbor.import_harbor,
    }
    if source not in importers:
        raise UsageError(f"--from {source!r}: choose one of {', '.join(SOURCES)}")
    where = (path or project).resolve()
    if not where.exists():
        raise UsageError(f"{where} does not exist")
    return importers[source](project.resolve(), where)
