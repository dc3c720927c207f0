"""ratchet's state is its owner's alone: `.ratchet/` is 0700 and the files ratchet
writes there (the journal, `results.tsv`, briefs) are 0600, whatever the umask.

They hold patches, rationales and candidates' output. Modes are given explicitly to
each file (never through the process's umask: ratchet is a library too), and a state
left readable by an older ratchet is tightened the next time it is opened.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TextIO

DIR_MODE = 0o700
FILE_MODE = 0o600


def _tighten(path: Path, mode: int) -> None:
    # a file another user owns cannot be changed, and is not ours to change
    with contextlib.suppress(FileNotFoundError, PermissionError):
        os.chmod(path, mode)


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter, created if missing."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)
    return path


def tighten_file(path: Path) -> None:
    """An existing file made 0600; a link is left alone (its target is not ours)."""
    if path.exists() and not path.is_symlink():
        _tighten(path, FILE_MODE)


def create_private(path: Path) -> None:
    """`path` as an empty 0600 file if it is missing, tightened if it is there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError:  # a link stands there: replace it, never write through it
        write_private(path, "")
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically: a fresh 0600 file beside it, renamed over
    it, so whatever stood at `path` (a link too) is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_appending(path: Path) -> TextIO:
    """`path` opened for appending as a 0600 file (an existing one is tightened); a link
    standing at `path` is an error, never followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
