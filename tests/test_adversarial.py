"""Candidates that misbehave, each a real program in a real repository, under each layer.

For every case: the decision and its why, the loop goes on (a second, honest experiment
follows), the host's files and the journal are intact. Under `bwrap` the writes outside
the worktree and the network connection fail; under `process` they succeed, as
docs/sandboxing.md says.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import adopting, command_line, descendants_gone, living_descendants

from conftest import experiments, git, layer_or_skip, make_project, ratchet

PY = sys.executable
LAYERS = ["process", "bwrap"]


PICK = "import json, os\nprint(json.load(open(os.environ['RATCHET_BRIEF']))['experiment'])\n"
SCORE = "from value import X\nprint(f'score: {(X - 2) ** 2}')\n"


def project_with(tmp_path: Path, layer: str, candidate: str, extra: str = "",
                 budget: str = "20s", files: dict[str, str] | None = None) -> Path:  # fmt: skip
    """A run of two experiments: the misbehaving candidate, then an honest X = 3.

    The proposer reads its experiment number from the brief and copies the candidate
    from a tracked file, so that it works inside a sandbox too.
    """
    propose = (
        f'if [ "$({PY} pick.py)" = 2 ]; then cp bad.txt value.py; '
        "else echo 'X = 3' > value.py; fi"
    )
    spec = f"""
[scope]
editable = ["value.py"]
protected = ["score.py"]
[metric]
command = "{PY} score.py"
name = "score"
budget = "{budget}"
grace = "0.5s"
[run]
max_experiments = 2
[proposer]
kind = "command"
command = '''{propose}'''
[sandbox]
kind = "{layer}"
{extra}
"""
    files = {"value.py": "X = 5\n", "score.py": SCORE, "bad.txt": candidate, "pick.py": PICK,
             **(files or {})}  # fmt: skip
    return make_project(tmp_path / "p", files, spec)  # fmt: skip


def run_case(project: Path) -> tuple[dict[str, object], dict[str, object]]:
    result = ratchet(project, "run", timeout=180)
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert len(rows) == 3, [r["decision"] for r in rows]
    bad, honest = rows[1], rows[2]
    assert honest["decision"] == "keep"  # the loop went on, and works
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(project, "status", "--porcelain") == ""
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return bad, honest


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on the host's loopback; what it received."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            received.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("layer", LAYERS)
def test_an_infinite_loop_times_out(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    project = project_with(tmp_path, layer, "while True:\n    pass\n", budget="1s")
    bad, _ = run_case(project)
    assert bad["decision"] == "timeout"
    assert bad["why"] == "the command ran past its 1s budget and was killed"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_bounded_fork_bomb_is_killed_whole(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    bomb = "import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(300)\n        os._exit(0)\ntime.sleep(300)\n"
    project = project_with(tmp_path, layer, bomb, budget="2s")
    with adopting():  # whatever of the bomb outlives ratchet is re-parented to this test
        bad, _ = run_case(project)
        assert bad["decision"] == "timeout"
        assert descendants_gone(), [command_line(p) for p in living_descendants()]


@pytest.mark.parametrize("layer", LAYERS)
def test_an_8_gb_allocation_fails_under_a_memory_limit(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    hog = "block = bytearray(8 * 2**30)\nX = 2\n"
    project = project_with(tmp_path, layer, hog, extra='memory = "1g"')
    bad, _ = run_case(project)
    assert bad["decision"] == "crash"
    assert "MemoryError" in str(bad["why"])


@pytest.mark.parametrize("layer", LAYERS)
def test_200_mb_of_output_is_capped(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    flood = "import sys\nfor _ in range(200):\n    sys.stdout.write('y' * 2**20)\nprint()\nX = 9\n"
    project = project_with(tmp_path, layer, flood)
    bad, _ = run_case(project)
    assert bad["decision"] == "discard"  # it printed its score after the flood
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    output = db.execute("SELECT output FROM measurements WHERE experiment = ?",
                        (bad["id"],)).fetchone()[0]  # fmt: skip
    assert len(output) < 30_000
    assert "bytes of output dropped" in output


@pytest.mark.parametrize("layer", LAYERS)
def test_a_daemon_that_ignores_sigterm(tmp_path: Path, layer: str) -> None:
    """A grandchild that leaves the process group and ignores SIGTERM.

    It execs `sleep` with a duration of its own, so that the test can tell it among its
    own descendants: bwrap's PID namespace takes it down with the command; the process
    layer cannot, as docs/sandboxing.md says.
    """
    layer_or_skip(layer)
    marker = f"3600.{os.getpid()}{len(layer)}"
    # the command waits until the daemon has exec'd `sleep` (its pid comes through a
    # pipe), so that it is a daemon, not a child killed with the group, whatever the load
    daemon = (
        "import os, signal, time\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}'])\n"
        "    os.write(w, f'{pid}\\n'.encode())\n"
        "    os._exit(0)\n"
        "pid = int(os.read(r, 64))\n"
        "deadline = time.monotonic() + 10\n"
        "while time.monotonic() < deadline:\n"
        "    try:\n"
        "        if open(f'/proc/{pid}/cmdline', 'rb').read().startswith(b'sleep'):\n"
        "            break\n"
        "    except OSError:\n"
        "        break\n"
        "    time.sleep(0.01)\n"
        "X = 9\n"
    )
    project = project_with(tmp_path, layer, daemon)

    def daemons() -> list[int]:
        return [p for p in living_descendants() if command_line(p) == f"sleep {marker}"]

    with adopting():  # the daemon, orphaned, is re-parented to this test; killed after
        bad, _ = run_case(project)
        assert bad["decision"] == "discard"
        if layer == "bwrap":
            assert descendants_gone(), "the daemon outlived its bwrap sandbox"
        else:
            assert len(daemons()) == 1  # the documented escape from the process layer


@pytest.mark.parametrize("layer", LAYERS)
def test_writes_outside_the_worktree(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    outside = tmp_path / "outside.txt"
    home = Path.home() / f"ratchet-test-{os.getpid()}-{layer}.txt"
    writer = (
        f"for path in [{str(outside)!r}, {str(home)!r}, '/tmp/ratchet-adversarial-{layer}']:\n"
        "    try:\n        open(path, 'w').write('pwned')\n"
        "    except OSError as e:\n        print('denied', path, e)\n"
        "X = 9\n"
    )
    project = project_with(tmp_path, layer, writer)
    try:
        bad, _ = run_case(project)
        assert bad["decision"] == "discard"
        if layer == "bwrap":
            assert not outside.exists()
            assert not home.exists()
            assert not Path(f"/tmp/ratchet-adversarial-{layer}").exists()
        else:
            assert outside.read_text() == "pwned"  # the process layer does not isolate files
    finally:
        home.unlink(missing_ok=True)
        Path(f"/tmp/ratchet-adversarial-{layer}").unlink(missing_ok=True)


@pytest.mark.parametrize("layer", LAYERS)
def test_deleting_git_and_ratchet(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    wrecker = (
        "import shutil, os\n"
        "shutil.rmtree('.ratchet', ignore_errors=True)\n"
        "for path in ['.git', '../../.ratchet/journal.db']:\n"
        "    try:\n        os.remove(path)\n"
        "    except OSError as e:\n        print('denied', path, e)\n"
        "X = 9\n"
    )
    project = project_with(tmp_path, layer, wrecker)
    journal = project / ".ratchet" / "journal.db"
    if layer == "process":
        # the process layer cannot stop a relative path to the journal: only bwrap can
        wrecker = wrecker.replace("'../../.ratchet/journal.db'", "'nothing-here'")
        (project / "bad.txt").write_text(wrecker)
        git(project, "commit", "-qam", "the process layer's variant")
    bad, _ = run_case(project)
    assert journal.exists()
    assert bad["decision"] in {"discard", "crash"}
    assert (project / ".ratchet" / "slots" / "0" / ".git").is_file()  # rebuilt if removed


@pytest.mark.parametrize("layer", LAYERS)
def test_modifying_a_protected_file(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    cheat = "open('score.py', 'w').write(\"print('score: -100')\")\nX = 9\n"
    project = project_with(tmp_path, layer, cheat)
    bad, _ = run_case(project)
    if layer == "bwrap":  # read-only inside the sandbox: the write itself fails
        assert bad["decision"] == "crash"
        assert "Read-only file system" in str(bad["why"]) or "Permission" in str(bad["why"])
    else:
        assert bad["decision"] == "tampered"
        assert bad["why"] == "protected files changed during the measurement: score.py changed"
    assert git(project, "show", "ratchet/default:score.py") == SCORE.strip()


@pytest.mark.parametrize("layer", LAYERS)
def test_a_network_connection_to_a_local_listener(
    tmp_path: Path, layer: str, listener: tuple[int, list[bytes]]
) -> None:
    layer_or_skip(layer)
    port, received = listener
    caller = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
        "except OSError as e:\n    print('no network:', e)\n"
        "X = 9\n"
    )
    project = project_with(tmp_path, layer, caller)
    bad, _ = run_case(project)
    assert bad["decision"] == "discard"
    if layer == "bwrap":
        assert received == []
    else:
        assert received == [b"leak"]  # the process layer shares the host's network


@pytest.mark.parametrize("layer", LAYERS)
def test_reading_an_environment_secret(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    reader = "import os\nprint('key:', os.environ.get('OPENAI_API_KEY', 'absent'))\nX = 9\n"
    project = project_with(tmp_path, layer, reader)
    result = ratchet(project, "run", env={"OPENAI_API_KEY": "sk-adversarial-0123456789"})
    assert result.returncode == 0
    db = (project / ".ratchet" / "journal.db").read_bytes()
    assert b"sk-adversarial-0123456789" not in db
    output = sqlite3.connect(project / ".ratchet" / "journal.db").execute(
        "SELECT output FROM measurements WHERE experiment = 2").fetchone()[0]  # fmt: skip
    assert "key: absent" in output


@pytest.mark.parametrize("layer", LAYERS)
def test_planting_json_py(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    project = project_with(tmp_path, layer, "X = 9\n")
    spec = (project / "ratchet.toml").read_text().replace(
        'editable = ["value.py"]', 'editable = ["*.py"]').replace('protected = ["score.py"]', "")  # fmt: skip
    spec = spec.replace("cp ", "echo 'loads = 1' > json.py; cp ")
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "wide scope")
    bad, _ = run_case(project)
    assert bad["decision"] == "out-of-scope"
    assert "json.py (shadows the standard library's json)" in str(bad["why"])


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("defence", ["evaluate", "strict"])
def test_a_forged_metric_after_the_real_one(tmp_path: Path, layer: str, defence: str) -> None:
    """The candidate prints a better score after the real one, at exit.

    An evaluator that reads the candidate's artifact (here, value.py as text) is never
    fooled. An evaluator that imports candidate code can be; `strict` then turns the
    second report into `no-metric`.
    """
    layer_or_skip(layer)
    evaluator = (
        "import re\n"
        "X = int(re.search(r'X = (\\d+)', open('value.py').read()).group(1))\n"
        "print(f'score: {(X - 2) ** 2}')\n"
    )
    forger = "import atexit\natexit.register(lambda: print('score: -1000'))\nX = 9\n"
    project = project_with(tmp_path, layer, forger, files={"evaluate.py": evaluator})
    spec = (project / "ratchet.toml").read_text()
    if defence == "evaluate":
        spec = spec.replace('budget = "20s"', f'budget = "20s"\nevaluate = "{PY} evaluate.py"')
        spec = spec.replace('protected = ["score.py"]', 'protected = ["score.py", "evaluate.py"]')
    else:
        spec = spec.replace('budget = "20s"', 'budget = "20s"\nstrict = true')
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", defence)
    bad, _ = run_case(project)
    if defence == "evaluate":
        assert bad["decision"] == "discard"  # measured by the evaluator: 49, not -1000
        assert bad["value"] == 49
    else:
        assert bad["decision"] == "no-metric"
        assert bad["why"] == "'score' was reported 2 times and the metric is strict"


@pytest.mark.parametrize("network", [False, True])
def test_a_proposer_reaches_the_network_only_when_allowed(
    tmp_path: Path, network: bool, listener: tuple[int, list[bytes]]
) -> None:
    layer_or_skip("bwrap")
    port, received = listener
    caller = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'proposer')\n"
        "except OSError as e:\n    print('no network:', e)\n"
        "open('value.py', 'w').write('X = 3\\n')\n"
    )
    project = make_project(tmp_path / "p", {"value.py": "X = 5\n", "score.py": SCORE,
                                            "call.py": caller}, f"""
[scope]
editable = ["value.py"]
[metric]
command = "{PY} score.py"
name = "score"
[run]
max_experiments = 1
[proposer]
kind = "command"
command = "{PY} call.py"
network = {str(network).lower()}
[sandbox]
kind = "bwrap"
""")  # fmt: skip
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    assert experiments(project)[1]["decision"] == "keep"  # the proposal itself went through
    assert received == ([b"proposer"] if network else [])
