"""Whether the journal file can be trusted before a run writes into it, at a cost that
does not grow with the history when it need not.

`PRAGMA quick_check` reads every page: seconds on a journal of 100,000 experiments. A run
that opens the journal (`Journal(path, verify=True)`) leaves a mark beside it,
`journal.db.checked`, saying how far the file is known to be sound:

- `closed`: the file as a verified run left it when it closed (size, change time, inode,
  WAL size) and the last row ids then. The file still so: reading its schema suffices
  (the `schema` check).
- `open`: a verified run holds the file, and the row ids it started from were sound. A
  mark still `open` at the next start means that run died (a kill, a crash, a lost
  machine): what changed since is what SQLite wrote for it, and a crash does not damage
  an SQLite file in WAL mode. The `recent` check reads that: every row written after the
  marked ids (in full, the WAL's included), every index, and the small tables. What was
  sound before the crash is not read again.
- no mark, a mark of another form, the file replaced (another inode), or a `closed`
  mark the file no longer matches (a copy, a change from outside, a write by a command
  that was not a run): every page is read (the `full` check).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ratchet.private import write_private

MARK_SUFFIX = ".checked"
TABLES_WITH_IDS = ("experiments", "measurements", "audit")  # append-mostly, by id
SMALL_TABLES = ("runs",)  # read whole by the recent check


@dataclass(frozen=True)
class Mark:
    state: str  # "open" or "closed"
    stamp: str  # the file when the mark was written (see `stamp`)
    rows: dict[str, int]  # the highest id of each of TABLES_WITH_IDS then

    def text(self) -> str:
        ids = " ".join(f"{table}={n}" for table, n in sorted(self.rows.items()))
        return f"{self.state}\n{self.stamp}\n{ids}\n"

    @classmethod
    def parse(cls, text: str) -> Mark | None:
        lines = text.splitlines()
        if len(lines) != 3 or lines[0] not in ("open", "closed"):
            return None  # an older ratchet's mark, or damaged: the full check
        try:
            rows = {k: int(v) for k, v in (item.split("=", 1) for item in lines[2].split())}
        except ValueError:
            return None
        if set(rows) != set(TABLES_WITH_IDS):
            return None
        return cls(lines[0], lines[1], rows)


def mark_path(journal: Path) -> Path:
    return journal.with_name(journal.name + MARK_SUFFIX)


def stamp(journal: Path) -> str:
    """The journal file's size, change time and inode, and its WAL's size (0 when every
    write is in the file)."""
    info = os.stat(journal)
    try:
        wal = os.stat(journal.with_name(journal.name + "-wal")).st_size
    except FileNotFoundError:
        wal = 0
    return f"{info.st_size} {info.st_mtime_ns} {info.st_ino} {wal}"


def _inode(stamped: str) -> str:
    parts = stamped.split()
    return parts[2] if len(parts) == 4 else ""


def read_mark(journal: Path) -> Mark | None:
    try:
        return Mark.parse(mark_path(journal).read_text())
    except OSError:
        return None


def last_ids(db: sqlite3.Connection) -> dict[str, int]:
    return {
        table: int(db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0])
        for table in TABLES_WITH_IDS
    }


def check(db: sqlite3.Connection, journal: Path) -> tuple[str | None, str]:
    """What is wrong with the file (None: nothing), and which check found it so: `schema`,
    `recent` or `full` (see the module's docstring)."""
    db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the header and schema
    mark, now = read_mark(journal), stamp(journal)
    if mark is not None and mark.state == "closed" and mark.stamp == now:
        return None, "schema"
    if mark is not None and mark.state == "open" and _inode(mark.stamp) == _inode(now):
        return _recent(db, mark), "recent"
    problems = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        return f"database disk image is malformed: {problems[0]}", "full"
    return None, "full"


def _recent(db: sqlite3.Connection, mark: Mark) -> str | None:
    """Read what a run that died wrote: its rows whole, every index and small table."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for table in TABLES_WITH_IDS:
        if table in tables:  # every column of every new row: their pages, overflow too
            for _ in db.execute(f"SELECT * FROM {table} WHERE id > ?", (mark.rows[table],)):
                pass
    for table in SMALL_TABLES:
        if table in tables:
            db.execute(f"SELECT * FROM {table}").fetchall()
    indexes = db.execute(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    for name, table in indexes:  # each index's every page (its b-tree counted whole)
        db.execute(f'SELECT COUNT(*) FROM "{table}" INDEXED BY "{name}"').fetchone()
    return None


def mark_open(db: sqlite3.Connection, journal: Path) -> None:
    """A verified run holds the file from now on, sound up to its current rows."""
    with contextlib.suppress(OSError):
        write_private(mark_path(journal), Mark("open", stamp(journal), last_ids(db)).text())


def mark_closed(journal: Path, rows: dict[str, int]) -> None:
    """The run closed the file with every write in it (checkpointed whole)."""
    with contextlib.suppress(OSError):
        write_private(mark_path(journal), Mark("closed", stamp(journal), rows).text())
