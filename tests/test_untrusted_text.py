"""Untrusted text on the user's terminal, and who can read ratchet's state.

One real run in a real repository, whose proposer and candidates speak in terminal
control sequences and rich markup: a kept proposal's rationale writes the clipboard
(OSC 52), links (OSC 8), clears the screen and overrides the text direction; a
candidate crashes with `[/bold]` as its last line of output, after a `[link=...]`; an
added file's name holds an escape sequence; a failing proposer's last line (quoted in
its why) too. Every view must show that text visibly escaped and never crash, and
`.ratchet/` must be its owner's alone.
"""

from __future__ import annotations

import json
import os
import re
import select
import sqlite3
import stat
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from conftest import GIT_ENV, experiments, git, make_project

PY = sys.executable
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4K\x07"  # OSC 52: write "rm -rf ~" to the clipboard
HYPERLINK = "\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07"  # OSC 8
CLEAR = "\x1b[2J\x1b[H"
BIDI = "\u202eexe.txt\u202c"
C1_CSI = "\x9b31m"  # the 8-bit CSI a C1-aware terminal obeys
HOSTILE = (
    f"faster{CLIPBOARD} see {HYPERLINK}{CLEAR} {BIDI} {C1_CSI} [/bold] "
    "[link=file:///etc/passwd]x[/link]\nsecond line\twith a tab\u200b"
)
BAD_NAME = "notes/a\x1b[2Jb.txt"
CRASH = """
import sys
print("loading\\x1b]52;c;Zm9v\\x07")
print("[link=file:///etc/passwd]x[/link]")
print("[/bold]")
sys.exit(1)
"""
PROPOSE = f"""
import json, os, sys
n = json.load(open(os.environ["RATCHET_BRIEF"]))["experiment"]
note = open(os.environ["RATCHET_PROPOSAL"], "w")
if n == 2:  # a real improvement, with a rationale that speaks to the terminal
    open("value.py", "w").write("X = 3\\n")
    json.dump({{"rationale": {HOSTILE!r}}}, note)
elif n == 3:  # a candidate that crashes with markup as its last line, in a named file
    open("value.py", "w").write({CRASH!r})
    open({BAD_NAME!r}, "w").write("hi\\n")
    json.dump({{"rationale": "crash " + {CLEAR!r}}}, note)
else:  # a proposer that fails: its last line is quoted in the why
    print("giving up" + {CLIPBOARD!r} + {HYPERLINK!r} + " [/bold]")
    sys.exit(1)
"""
SPEC = f"""
[scope]
editable = ["value.py", "notes/*"]
protected = ["score.py"]
[metric]
command = "{PY} score.py"
name = "score"
goal = "minimize"
budget = "20s"
grace = "0.5s"
[run]
max_experiments = 3
[proposer]
kind = "command"
command = "{PY} propose.py"
budget = "20s"
[sandbox]
kind = "process"
"""
FILES = {
    "value.py": "X = 5\n",
    "score.py": "from value import X\nprint(f'score: {(X - 2) ** 2}')\n",
    "propose.py": PROPOSE,
    "notes/readme.txt": "notes\n",
}
# what rich itself writes on a terminal: colours, the cursor hidden and shown, the live
# view's redraw (erase the line, cursor up); never anything the untrusted text holds
RICH_OWN = re.compile(r"\x1b\[[0-9;]*m|\x1b\[\?25[lh]|\x1b\[2K|\x1b\[[0-9]*[ABCDG]")


def run_ratchet(project: Path, *args: str, env: dict[str, str] | None = None,
                umask: int = 0o022) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [PY, "-m", "ratchet", *args],
        cwd=project,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **GIT_ENV, "PYTHONIOENCODING": "utf-8", **(env or {})},
        timeout=180,
        umask=umask,
    )


def raw_controls(text: str) -> list[str]:
    """The characters a terminal would act on (newlines and tabs aside)."""
    return sorted(
        {
            c
            for c in text
            if c not in "\n\t" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"}
        }
    )


def assert_plain(text: str) -> None:
    assert raw_controls(text) == [], f"raw control characters in: {text!r}"


def assert_only_rich_codes(text: str) -> None:
    """Output of a terminal session: once rich's own codes are taken out, nothing
    a terminal acts on is left (a pty turns newlines into CR LF)."""
    assert_plain(RICH_OWN.sub("", text).replace("\r", ""))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = make_project(tmp_path_factory.mktemp("hostile") / "p", FILES, SPEC)
    result = run_ratchet(project, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    return project, result.stdout + result.stderr


def by_id(project: Path) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in experiments(project)}


def test_the_hostile_run_is_recorded_raw_and_its_plain_lines_are_escaped(
    hostile: tuple[Path, str],
) -> None:
    project, output = hostile
    rows = by_id(project)
    assert [rows[i]["decision"] for i in (1, 2, 3, 4)] == [
        "keep", "keep", "crash", "invalid-proposal"
    ]  # fmt: skip
    assert rows[2]["rationale"] == HOSTILE  # the journal keeps the raw text
    assert rows[3]["why"].endswith(": [/bold]")
    assert BAD_NAME in json.loads(rows[3]["files"])
    assert CLIPBOARD in rows[4]["why"]
    message = git(project, "log", "-1", "--format=%B", "ratchet/default")
    assert_plain(message)  # `git log` shows it raw: stored escaped
    assert "faster\\x1b]52;c;cm0gLXJmIH4K\\x07" in message
    assert_plain(output)
    assert "faster\\x1b]52;c;cm0gLXJmIH4K\\x07" in output
    assert "exited with code 1: [/bold]" in output


@pytest.mark.parametrize("force_terminal", [False, True], ids=["pipe", "terminal"])
def test_log_show_review_and_status_show_the_text_escaped(
    hostile: tuple[Path, str], force_terminal: bool
) -> None:
    project, _ = hostile
    env = {"FORCE_COLOR": "1", "COLUMNS": "300"} if force_terminal else {"COLUMNS": "300"}
    outputs = {}
    for args in (["log"], ["show", "2"], ["show", "3"], ["show", "4"], ["review"],
                 ["review", "--patch"], ["status"]):  # fmt: skip
        result = run_ratchet(project, *args, env=env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert result.stderr == ""
        if force_terminal:
            assert "\x1b[" in result.stdout or args == ["status"]  # rich did style it
            assert_only_rich_codes(result.stdout)
        else:
            assert_plain(result.stdout)
        outputs[" ".join(args)] = RICH_OWN.sub("", result.stdout)
    escaped_clipboard = "\\x1b]52;c;cm0gLXJmIH4K\\x07"
    assert escaped_clipboard in outputs["show 2"]
    assert "\\x1b]8;;http://evil.example/\\x07click" in outputs["show 2"]
    assert "\\u202eexe.txt\\u202c" in outputs["show 2"]
    assert "\\x9b31m" in outputs["show 2"]
    assert "[/bold] [link=file:///etc/passwd]x[/link]" in outputs["show 2"]
    assert "second line" in outputs["show 2"]  # a newline stays one (a tab, spaces)
    assert "with a tab\\u200b" in outputs["show 2"]
    # the crashing candidate: its why, its output tail and its file name
    assert "[/bold]" in outputs["show 3"]
    assert "[link=file:///etc/passwd]x[/link]" in outputs["show 3"]
    assert "loading\\x1b]52;c;Zm9v\\x07" in outputs["show 3"]
    assert "a\\x1b[2Jb.txt" in outputs["show 3"]
    assert "a\\x1b[2Jb.txt" in outputs["log"]
    assert escaped_clipboard in outputs["show 4"]
    assert "giving up" in outputs["log"]
    assert escaped_clipboard in outputs["review"]
    assert escaped_clipboard in outputs["review --patch"]


def test_json_stays_the_exact_raw_data(hostile: tuple[Path, str]) -> None:
    project, _ = hostile
    shown = run_ratchet(project, "show", "2", "--json")
    log = run_ratchet(project, "log", "--json")
    status = run_ratchet(project, "status", "--json")
    review = run_ratchet(project, "review", "--json")
    for result in (shown, log, status, review):
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert json.loads(shown.stdout)["rationale"] == HOSTILE
    records = {r["id"]: r for r in json.loads(log.stdout)}
    assert records[2]["rationale"] == HOSTILE
    assert BAD_NAME in records[3]["files"]
    assert json.loads(status.stdout)["last"]["why"] == by_id(project)[4]["why"]
    assert [k["rationale"] for k in json.loads(review.stdout)["keeps"]] == [HOSTILE]


def test_results_tsv_has_one_clean_line_per_experiment(hostile: tuple[Path, str]) -> None:
    project, _ = hostile
    raw = (project / ".ratchet" / "results.tsv").read_bytes()
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", raw)
    text = raw.decode("utf-8")
    assert_plain(text.replace("\t", ""))
    lines = text.split("\n")
    assert lines[-1] == ""  # every line ends with a newline, and nothing follows
    header, *rows = lines[:-1]
    columns = header.split("\t")
    assert len(rows) == len(experiments(project)) == 4
    assert all(len(row.split("\t")) == len(columns) for row in rows)
    kept = dict(zip(columns, rows[1].split("\t"), strict=True))
    assert kept["description"].startswith("faster\\x1b]52;c;cm0gLXJmIH4K\\x07 see ")
    assert "[/link]\\nsecond line\\twith a tab\\u200b" in kept["description"]
    crashed = dict(zip(columns, rows[2].split("\t"), strict=True))
    assert crashed["files"].split(",") == ["notes/a\\x1b[2Jb.txt", "value.py"]


def read_until_exit(master: int, proc: subprocess.Popen[bytes]) -> bytes:
    """Everything the child writes to its terminal, until it has exited and the
    terminal has nothing more (no sleeping: select on the terminal itself)."""
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    return b"".join(chunks)


def test_the_live_view_on_a_terminal_shows_hostile_text_escaped(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    project = make_project(tmp_path / "p", FILES, SPEC)
    master, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    env = {**os.environ, **GIT_ENV, "PYTHONIOENCODING": "utf-8", "TERM": "xterm-256color"}
    for name in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE"):
        env.pop(name, None)
    proc = subprocess.Popen([PY, "-m", "ratchet", "run"], cwd=project, env=env,
                            stdin=child, stdout=child, stderr=child)  # fmt: skip
    os.close(child)
    try:
        output = read_until_exit(master, proc).decode("utf-8")
        assert proc.wait(timeout=60) == 0, output
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert "\x1b[" in output  # the live view did draw
    assert "MarkupError" not in output
    assert_only_rich_codes(output)
    screen = RICH_OWN.sub("", output)
    assert "exited with code 1: [/bold]" in screen  # the crash's why, in the table
    assert "giving up\\x1b]52;c;cm0gLXJmIH4K\\x07" in screen  # the failed proposer's
    assert [r["decision"] for r in experiments(project)] == [
        "keep", "keep", "crash", "invalid-proposal"
    ]  # fmt: skip


# permissions --------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def state_files(project: Path) -> list[Path]:
    """The files ratchet writes in `.ratchet/` (the slots are git's worktrees)."""
    return [p for p in (project / ".ratchet").iterdir() if p.is_file() or p.is_symlink()]


def test_a_run_under_umask_022_leaves_its_state_private(hostile: tuple[Path, str]) -> None:
    project, _ = hostile
    state = project / ".ratchet"
    assert mode(state) == 0o700
    names = {p.name for p in state_files(project)}
    assert {"journal.db", "results.tsv", "brief-0.json", ".gitignore"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert {p.name: oct(mode(p)) for p in state_files(project)} == {n: "0o600" for n in names}
    # SQLite gives the WAL and shared-memory files the database's mode
    db = sqlite3.connect(state / "journal.db")
    try:
        db.execute("SELECT COUNT(*) FROM experiments").fetchone()
        for suffix in ("-wal", "-shm"):
            assert mode(state / f"journal.db{suffix}") == 0o600
    finally:
        db.close()


def test_an_older_world_readable_state_is_tightened_and_links_are_replaced(
    tmp_path: Path,
) -> None:
    project = make_project(
        tmp_path / "p",
        {"value.py": "X = 5\n", "score.py": FILES["score.py"]},
        SPEC.replace('"value.py", "notes/*"', '"value.py"')
        .replace(f"{PY} propose.py", "echo 'X = 3' > value.py")
        .replace("max_experiments = 3", "max_experiments = 1"),
    )
    # what an older ratchet left: everything readable by all, and links planted where
    # ratchet writes (a brief that points at the user's own file)
    state = project / ".ratchet"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    db = sqlite3.connect(state / "journal.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE leftover (x)")
    for suffix in ("-wal", "-shm"):
        os.chmod(state / f"journal.db{suffix}", 0o644)  # while the connection holds them
    os.chmod(state / "journal.db", 0o644)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    os.chmod(victim, 0o644)
    (state / "brief-0.json").symlink_to(victim)
    (state / "results.tsv").symlink_to(victim)
    result = run_ratchet(project, "run")
    db.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert victim.read_text() == "the user's own file\n" and mode(victim) == 0o644
    assert mode(state) == 0o700
    for name in ("journal.db", "results.tsv", "brief-0.json", ".gitignore"):
        assert not (state / name).is_symlink()
        assert mode(state / name) == 0o600, name
    assert [r["decision"] for r in experiments(project)] == ["keep", "keep"]
    # loosened again by hand: the next command that opens the journal tightens it
    os.chmod(state, 0o755)
    os.chmod(state / "journal.db", 0o644)
    assert run_ratchet(project, "log").returncode == 0
    assert mode(state) == 0o700
    assert mode(state / "journal.db") == 0o600


def test_the_journal_tightens_its_wal_files_when_opened(tmp_path: Path) -> None:
    from ratchet.journal import Journal

    path = tmp_path / "state" / "journal.db"
    path.parent.mkdir()
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        (path.parent / name).touch()
        os.chmod(path.parent / name, 0o644)
    Journal(path).close()
    assert {p.name: mode(p) for p in path.parent.iterdir()} == {
        n: 0o600 for n in ("journal.db", "journal.db-wal", "journal.db-shm")
        if (path.parent / n).exists()
    }  # fmt: skip
    assert mode(path) == 0o600


# the text itself ----------------------------------------------------------------------
def test_every_control_and_invisible_character_is_escaped_visibly() -> None:
    from ratchet.plaintext import one_line, visible

    hostile = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)])
    hostile += "\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c"
    hostile += "\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff\U000e0041\ud800"
    shown = visible(hostile)
    assert_plain(shown)
    assert shown.count("\n") == 1 and shown.count("\t") == 1  # the two kept
    assert "\\x1b" in shown and "\\u202e" in shown and "\\U000e0041" in shown
    line = one_line(hostile)
    assert_plain(line) and "\n" not in line and "\t" not in line
    assert "\\n" in line and "\\t" in line and "\\r" in line
    for harmless in ("[/bold] [link=file:///etc/passwd]x[/link]", "naïve 日本語 ✓ 👍", ""):
        assert visible(harmless) == one_line(harmless) == harmless
    assert visible("a\r\nb") == "a\nb"  # CR LF is a newline; a lone CR is not
    assert visible("a\rb") == "a\\rb"


def test_a_markup_like_why_never_raises_in_the_live_view() -> None:
    import io

    from rich.console import Console

    from ratchet.events import ExperimentDecided
    from ratchet.journal import ExperimentRecord
    from ratchet.view import LiveView

    record = ExperimentRecord(
        id=7, run="r", slot=0, parent="0" * 40, commit=None, proposer="command",
        rationale=HOSTILE, patch="", files=[BAD_NAME], meta={}, cost_seconds=0,
        cost_tokens=0, cost_usd=0, stage="done", decision="crash",
        why=f"the metric command exited with code 1: {CLIPBOARD}[/bold]", value=None,
        metrics={}, duration=1.0, started_at=0, ended_at=1,
    )  # fmt: skip
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=200, color_system="truecolor")
    view = LiveView(console)
    view(ExperimentDecided(record, None))  # type: ignore[arg-type]
    console.print(view.render())
    assert_only_rich_codes(stream.getvalue())
    assert "\\x1b]52;c;cm0gLXJmIH4K\\x07[/bold]" in stream.getvalue()
