"""The kinds of failure the CLI tells apart by exit code, and how the machine's own
failures (a full disk, a damaged journal) are told apart from ratchet's bugs."""

from __future__ import annotations

import errno
import os
import sys


class UsageError(Exception):
    """The user must fix something (spec, arguments, repository state): exit 2, one line."""


class RunError(Exception):
    """The run could not go on (baseline failed, branch moved under us): exit 1, one line."""


class RunLocked(UsageError):
    """Another ratchet run holds the project: exit 2, naming it and its process."""


class JournalDamaged(RunError):
    """`journal.db` is not a database or is malformed; nothing was written to it."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13
# how git (under LC_ALL=C, as ratchet runs it) and libgit2 say it in their messages
_DISK_FULL_WORDS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
_SQLITE_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def _sqlite_error(error: BaseException) -> bool:
    """Whether `error` is SQLite's. Never imports sqlite3 (`ratchet --help` does not
    need it): a process that never imported it has no SQLite error to tell apart."""
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(error, sqlite3.DatabaseError)


def is_journal_damage(error: BaseException) -> bool:
    return _sqlite_error(error) and getattr(error, "sqlite_errorcode", None) in _SQLITE_CORRUPT


def machine_failure(error: BaseException) -> str | None:
    """One line for a failure of the machine rather than of ratchet or the candidate:
    a full disk or a damaged journal. None for anything else."""
    if isinstance(error, OSError) and error.errno in _DISK_FULL:
        where = f" writing {error.filename}" if error.filename else ""
        return (
            f"the disk is full ({error.strerror}{where}); free some space and run the "
            "same command again: the run resumes where it stopped"
        )
    if any(words in str(error) for words in _DISK_FULL_WORDS):  # git's and libgit2's
        return (
            f"the disk is full ({str(error).strip().splitlines()[-1][:200]}); free some space "
            "and run the same command again: the run resumes where it stopped"
        )
    if _sqlite_error(error):
        if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
            return (
                "the disk is full (the journal could not be written); free some space "
                "and run the same command again: the run resumes where it stopped"
            )
        if is_journal_damage(error):
            return (
                f"the journal .ratchet/journal.db is damaged ({error}); move it aside to "
                "start afresh, or restore it from a backup"
            )
    return None
