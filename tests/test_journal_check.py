"""After a run dies (a kill, a crash), the next start checks what that run wrote, not the
whole file again; damage there is still found before anything is written, and a file
replaced or changed while no run held it is still read whole."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ratchet.errors import JournalDamaged
from ratchet.journal import Journal
from ratchet.journalcheck import mark_path, read_mark

# A run's process: it opens the journal as a run does, writes `count` experiments and
# dies without closing it (os._exit: as a kill -9 leaves it, the WAL too).
DYING_RUN = """
import os, sqlite3, sys
from pathlib import Path
from ratchet.journal import Journal, RunRecord
path, count, checkpoint = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
journal = Journal(path, verify=True)
if journal.run("night") is None:
    journal.create_run(RunRecord("night", "ratchet/night", "b" * 40, "d", "score", "minimize", 0))
for i in range(count):
    experiment = journal.begin_experiment("night", 0, "p" * 40, "knobs")
    journal.record_proposal(experiment, f"#{i}", "+x = 1\\n" * 300, ["value.py"], {}, 0.1)
    journal.add_measurement(experiment, 0, "ok", 1.0, {}, 1.0, "step\\n" * 300, 0.0)
    journal.decide(experiment, "discard", "not better", 1.0)
if checkpoint:  # the WAL copied into the file, as SQLite's own checkpoints do mid-run
    journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
print(journal.check, flush=True)
os._exit(0)
"""


def _dying_run(path: Path, count: int, checkpoint: bool = False) -> str:
    done = subprocess.run([sys.executable, "-c", DYING_RUN, str(path), str(count),
                           "1" if checkpoint else "0"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def _clean_run(path: Path) -> None:
    Journal(path, verify=True).close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    journal = tmp_path / "journal.db"
    assert _dying_run(journal, 20) == "full"  # never checked: read whole
    return journal


def test_after_a_crash_only_what_the_dead_run_wrote_is_read(path: Path) -> None:
    mark = read_mark(path)
    assert mark is not None and mark.state == "open"
    assert mark.rows == {"experiments": 0, "measurements": 0, "audit": 0}  # as it began
    assert _dying_run(path, 30) == "recent"  # the first run's crash: its rows, the indexes
    mark = read_mark(path)
    assert mark is not None and mark.state == "open" and mark.rows["experiments"] == 20
    journal = Journal(path, verify=True)
    assert journal.check == "recent" and not journal.full_check
    assert journal.decided_count("night") == 50  # nothing the dead runs wrote was lost
    journal.close()
    mark = read_mark(path)
    assert mark is not None and mark.state == "closed" and mark.rows["experiments"] == 50
    again = Journal(path, verify=True)
    assert again.check == "schema"  # closed as a run leaves it
    again.close()


def test_damage_in_what_the_dead_run_wrote_is_found_and_left_alone(path: Path) -> None:
    _clean_run(path)
    _dying_run(path, 200, checkpoint=True)  # its rows are in the file's last pages
    assert not path.with_name("journal.db-wal").stat().st_size
    data = bytearray(path.read_bytes())
    page = (len(data) // 4096) * 3 // 4 * 4096  # among its rows, not on the b-trees' edges
    data[page : page + 2 * 4096] = b"\xff" * (2 * 4096)  # torn writes
    path.write_bytes(bytes(data))
    os.utime(path, ns=(0, 0))  # not even its change time hints at it
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(JournalDamaged) as damaged:
        Journal(path, verify=True)
    assert "malformed" in str(damaged.value) and "nothing was written to it" in str(damaged.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    mark = read_mark(path)
    assert mark is not None and mark.state == "open"  # still the dead run's: checked again


def test_a_journal_replaced_after_a_crash_is_read_whole(path: Path) -> None:
    copy = path.with_name("copy.db")
    copy.write_bytes(path.read_bytes())
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    copy.replace(path)  # another inode, as a restored backup is
    journal = Journal(path, verify=True)
    assert journal.check == "full"
    journal.close()


def test_a_mark_of_another_form_means_the_full_check(path: Path) -> None:
    _clean_run(path)
    mark_path(path).write_text("1 2 3 4\n")  # an older ratchet's mark
    journal = Journal(path, verify=True)
    assert journal.check == "full"
    journal.close()
