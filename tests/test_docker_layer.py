"""The `docker` layer against a real daemon and an image imported from this machine's files.

`docker_image` (tests/docker_support.py) finds or starts the daemon and imports the image
once per session; without a daemon these tests skip with the daemon's own reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from processes import wait_for

from conftest import check_consistent, experiments, git, make_project, ratchet
from ratchet.environment import child_environment
from ratchet.sandbox import ProcessResult
from ratchet.sandbox.docker import DockerSandbox, container_record
from ratchet.sandbox.process import kill_leftover

PROTECTED = ["prepare.py", "data"]
EVENT_TIMEOUT = 30.0  # seconds to wait for a container to reach a point it signals


@pytest.fixture
def slot(tmp_path: Path) -> Path:
    """A slot as ratchet makes one: a detached git worktree under a 0700 `.ratchet/`."""
    project = make_project(
        tmp_path / "project",
        {
            "prepare.py": "TIME_BUDGET = 300\n",
            "train.py": "print('val_bpb: 1.0')\n",
            "data/a.csv": "1,2\n",
        },
    )
    state = project / ".ratchet"
    state.mkdir(mode=0o700)
    path = state / "slots" / "0"
    git(project, "worktree", "add", "--detach", "-q", str(path), "HEAD")
    return path


def run(
    sandbox: DockerSandbox,
    command: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    budget: float = 30.0,
    pidfile: Path | None = None,
) -> ProcessResult:
    return sandbox.run(command, cwd, env or {}, budget, 1.0, pidfile)


def python(code: str) -> str:
    """A shell command running `code` with the image's python."""
    return "python -c " + shlex.quote(code)


def containers_named(name: str) -> list[str]:
    """Containers with exactly this name, running or not."""
    out = subprocess.run(
        ["docker", "ps", "--all", "--filter", f"name=^{name}$", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


class NamedSandbox(DockerSandbox):
    """Remembers the names of the containers it starts, to look them up afterwards."""

    names: list[str]

    def container_name(self) -> str:
        name = super().container_name()
        self.names = [*getattr(self, "names", []), name]
        return name


def in_thread(work: Callable[[], ProcessResult]) -> tuple[threading.Thread, list[ProcessResult]]:
    results: list[ProcessResult] = []
    thread = threading.Thread(target=lambda: results.append(work()))
    thread.start()
    return thread, results


# ---- running a command ----


def test_a_command_runs_in_the_worktree_and_its_output_comes_back(
    docker_image: str, slot: Path
) -> None:
    sandbox = DockerSandbox(docker_image, protected=PROTECTED)
    code = (
        "import os, sys; print('cwd', os.getcwd()); print('ids', os.getuid(), os.getgid());"
        "print('home', os.environ['HOME']); print('seed', os.environ['RATCHET_SEED']);"
        "open('out.txt', 'w').write('written inside'); sys.exit(3)"
    )
    result = run(sandbox, python(code), slot, child_environment(extra={"RATCHET_SEED": "7"}))
    assert result.returncode == 3 and not result.timed_out, result.output
    lines = result.output.splitlines()
    assert f"cwd {slot}" in lines
    assert f"ids {os.getuid()} {os.getgid()}" in lines
    assert "home /tmp" in lines and "seed 7" in lines
    out = slot / "out.txt"
    assert out.read_text() == "written inside"
    assert (out.stat().st_uid, out.stat().st_gid) == (os.getuid(), os.getgid())


def test_a_worktree_path_with_commas_quotes_and_colons_is_mounted_as_is(
    docker_image: str, tmp_path: Path
) -> None:
    """`--mount` fields are CSV-quoted; `-v` would have split this path at its colon."""
    odd = tmp_path / 'my,project "v2":final'
    odd.mkdir()
    result = run(DockerSandbox(docker_image), python("import os; print(os.getcwd())"), odd)
    assert result.returncode == 0 and result.output.splitlines() == [str(odd)], result.output


def test_a_non_root_user_uses_a_worktree_under_a_private_state_folder(
    docker_image: str, slot: Path
) -> None:
    """ratchet runs the container as the user who runs ratchet; for a user other than
    root, the slot and its 0700 `.ratchet/` belong to that user, and the mounts work."""
    if os.geteuid() != 0:
        pytest.skip("giving the project to another user needs root")
    project = slot.parents[2]
    subprocess.run(["chown", "-R", "1000:1000", str(project)], check=True)
    assert (project / ".ratchet").stat().st_mode & 0o777 == 0o700
    sandbox = DockerSandbox(docker_image, protected=PROTECTED, user="1000:1000")
    code = (
        "import os; open('out.txt', 'w').write(str(os.getuid()));"
        "open('/tmp/scratch', 'w').write('x'); open(os.environ['HOME'] + '/h', 'w').write('x')"
    )
    result = run(sandbox, python(code), slot)
    assert result.returncode == 0, result.output
    assert (slot / "out.txt").read_text() == "1000"
    assert (slot / "out.txt").stat().st_uid == 1000
    # a file of another user stays out of reach: no capability overrides permissions
    os.chown(slot / "train.py", 0, 0)
    denied = run(sandbox, "echo x >> train.py", slot)
    assert denied.returncode != 0 and "Permission denied" in denied.output


def test_the_budget_kills_a_hanging_command_and_removes_its_container(
    docker_image: str, slot: Path
) -> None:
    """The command ignores SIGTERM, so the CLI is killed and the container outlives it:
    ratchet removes it by name."""
    sandbox = NamedSandbox(docker_image)
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "open('started', 'w').close(); time.sleep(600)"
    )
    thread, results = in_thread(lambda: run(sandbox, python(code), slot, budget=5.0))
    wait_for(slot / "started", timeout=EVENT_TIMEOUT)
    [name] = sandbox.names
    assert containers_named(name) == [name]  # it runs, and the lookup would find it
    thread.join(timeout=60)
    [result] = results
    assert result.timed_out and result.returncode is None
    assert result.duration < 5.0 + 1.0 + 10.0
    assert containers_named(name) == []


ORPHAN = """
import sys
from pathlib import Path
from ratchet.sandbox.docker import DockerSandbox, container_record
from ratchet.sandbox.process import kill_leftover
slot = Path(sys.argv[2])
DockerSandbox(sys.argv[1]).run(sys.argv[3], slot, {}, 600, 1.0, slot.parent / "0.pid")
"""


def test_a_container_left_by_a_killed_ratchet_goes_with_the_slots_next_command(
    docker_image: str, slot: Path
) -> None:
    pidfile = slot.parent / "0.pid"
    hang = python("import time; open('started', 'w').close(); time.sleep(600)")
    killed = subprocess.Popen([sys.executable, "-c", ORPHAN, docker_image, str(slot), hang])
    try:
        wait_for(slot / "started", timeout=EVENT_TIMEOUT)
    finally:
        killed.kill()  # ratchet itself, killed outright mid-measurement
        killed.wait()
    kill_leftover(pidfile)  # what the next ratchet does first: the CLI's group is gone
    name = container_record(pidfile).read_text()
    assert containers_named(name) == [name]  # yet the daemon's container runs on
    result = run(DockerSandbox(docker_image), "true", slot, pidfile=pidfile)
    assert result.returncode == 0, result.output
    assert containers_named(name) == []
    assert not container_record(pidfile).exists()


# ---- what a container cannot do ----


def _host_addresses() -> list[str]:
    """127.0.0.1 and this machine's other IPv4 addresses, which a bridge would reach."""
    addresses = {"127.0.0.1"}
    for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        addresses.add(str(info[4][0]))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        addresses.add(probe.getsockname()[0])
    except OSError:
        pass  # no route out at all
    finally:
        probe.close()
    return sorted(addresses)


def test_a_container_has_no_network(docker_image: str, slot: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    addresses = _host_addresses()
    code = (
        "import socket, sys\n"
        f"for host in {addresses!r}:\n"
        "    try:\n"
        f"        socket.create_connection((host, {port}), timeout=3).close()\n"
        "        print('connected', host)\n"
        "    except OSError as exc:\n"
        "        print('failed', host, type(exc).__name__)\n"
        "names = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
        "print('interfaces', ','.join(sorted(names)))\n"
    )
    try:
        result = run(DockerSandbox(docker_image), python(code), slot)
        assert result.returncode == 0, result.output
        lines = result.output.splitlines()
        assert [line for line in lines if line.startswith("connected")] == []
        assert {line.split()[1] for line in lines if line.startswith("failed")} == set(addresses)
        assert "interfaces lo" in lines
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached it
        for host in addresses:  # while from the host, every one of them answers
            socket.create_connection((host, port), timeout=3).close()
    finally:
        listener.close()


def test_protected_files_and_git_are_read_only_inside(docker_image: str, slot: Path) -> None:
    before = {p: (slot / p).read_bytes() for p in ["prepare.py", "data/a.csv", ".git"]}
    code = (
        "import os\n"
        "def attempt(what, action):\n"
        "    try:\n"
        "        action()\n"
        "        print(what, 'ok')\n"
        "    except OSError as exc:\n"
        "        print(what, exc.strerror)\n"
        "attempt('append-prepare', lambda: open('prepare.py', 'a').write('X = 1'))\n"
        "attempt('remove-prepare', lambda: os.remove('prepare.py'))\n"
        "attempt('new-data', lambda: open('data/new.csv', 'w').write('5'))\n"
        "attempt('append-git', lambda: open('.git', 'a').write('x'))\n"
        "attempt('rename-git', lambda: os.rename('.git', 'moved'))\n"
        "attempt('edit-train', lambda: open('train.py', 'a').write('# ok'))\n"
    )
    result = run(DockerSandbox(docker_image, protected=PROTECTED), python(code), slot)
    assert result.returncode == 0, result.output
    said = dict(line.split(" ", 1) for line in result.output.splitlines())
    assert said["append-prepare"] == "Read-only file system"
    assert said["new-data"] == "Read-only file system"
    assert said["append-git"] == "Read-only file system"
    assert said["remove-prepare"] in {"Read-only file system", "Device or resource busy"}
    assert said["rename-git"] in {"Read-only file system", "Device or resource busy"}
    assert said["edit-train"] == "ok"  # the rest of the worktree is the candidate's
    assert {p: (slot / p).read_bytes() for p in before} == before
    assert not (slot / "data" / "new.csv").exists()


def test_nothing_of_the_host_outside_the_worktree_is_visible(
    docker_image: str, slot: Path, tmp_path: Path
) -> None:
    project = slot.parents[2]
    planted = {
        "canary": tmp_path / "canary.txt",
        "journal": project / ".ratchet" / "journal.db",
        "sibling": slot.parent / "1" / "train.py",
        "spec": project / "prepare.py",
    }
    for path in planted.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("host only\n")
    hidden = {
        **{k: str(v) for k, v in planted.items()},
        "project-git": str(project / ".git"),
        "home": str(Path.home()),
        "passwd": "/etc/passwd",
        "cwd-of-tests": str(Path.cwd()),
        "docker-socket": "/var/run/docker.sock",
    }
    code = (
        "import json, os\n"
        f"hidden = {hidden!r}\n"
        "print(json.dumps({k: os.path.exists(v) for k, v in hidden.items()}))\n"
        f"print(json.dumps(sorted(os.listdir({str(slot.parent)!r}))))\n"
        f"print(json.dumps(sorted(os.listdir({str(project)!r}))))\n"
    )
    result = run(DockerSandbox(docker_image, protected=PROTECTED), python(code), slot)
    assert result.returncode == 0, result.output
    seen, slots, project_entries = (json.loads(line) for line in result.output.splitlines())
    assert seen == dict.fromkeys(hidden, False)
    assert slots == ["0"]  # the mount point only; slot 1 beside it is not there
    assert project_entries == [".ratchet"]  # a bare path down to the mount, nothing else


def test_secrets_go_in_by_name_and_never_appear_in_argv(docker_image: str, slot: Path) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    env = {"API_TOKEN": secret}
    pidfile = slot.parent / "0.pid"
    code = (
        "import hashlib, os, time\n"
        "print(hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest(), flush=True)\n"
        "open('ready', 'w').close()\n"
        "deadline = time.monotonic() + 30\n"
        "while not os.path.exists('release') and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
    )
    sandbox = DockerSandbox(docker_image)
    thread, results = in_thread(lambda: run(sandbox, python(code), slot, env, pidfile=pidfile))
    try:
        wait_for(slot / "ready", timeout=EVENT_TIMEOUT)
        cli = int(pidfile.read_text())  # the group leader: the shell exec'd the CLI
        argv = Path(f"/proc/{cli}/cmdline").read_bytes().split(b"\0")
        assert b"run" in argv and b"API_TOKEN" in argv  # `-e API_TOKEN`: the name only
        assert not any(secret.encode() in arg for arg in argv)
    finally:
        (slot / "release").touch()
        thread.join(timeout=60)
    [result] = results
    assert result.returncode == 0, result.output
    assert hashlib.sha256(secret.encode()).hexdigest() in result.output  # it did arrive


def test_memory_and_process_limits_hold(docker_image: str, slot: Path) -> None:
    sandbox = DockerSandbox(docker_image, memory="64m", pids=32)
    small = python("b = b'x' * (8 << 20); print('small ok', flush=True)")
    big = python("b = b'x' * (512 << 20); print('big allocated')")
    result = run(sandbox, f"{small} && {big}", slot)
    assert "small ok" in result.output and "big allocated" not in result.output
    assert result.returncode == 137, result.output  # killed by the cgroup's OOM killer
    fork_bomb = (
        "import os, time\n"
        "count = 0\n"
        "try:\n"
        "    while count < 10000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        count += 1\n"
        "except OSError as exc:\n"
        "    print('stopped after', count, exc.strerror, flush=True)\n"
    )
    result = run(sandbox, python(fork_bomb), slot, budget=30.0)
    assert not result.timed_out, result.output
    words = result.output.split()
    assert words[:2] == ["stopped", "after"], result.output
    assert 0 < int(words[2]) < 32 and "Resource temporarily unavailable" in result.output
    # the children die with the container: the command returned well before they wake
    assert result.duration < 30


# ---- a whole run ----

PROPOSE = """
import json, os, re
brief = json.load(open(os.environ["RATCHET_BRIEF"]))
text = open("value.py").read()
x = int(re.search(r"X = (\\d+)", text).group(1)) if "1 / 0" not in text else 0
open("value.py", "w").write("X = 3\\n" if x == 5 else "X = 1 / 0\\n")
print("from", x, "with a brief of", len(brief), "keys")
"""

DOCKER_SPEC = """
[sandbox]
kind = "docker"
image = "{image}"
[scope]
editable = ["value.py"]
[metric]
command = "python score.py"
name = "score"
goal = "minimize"
budget = "30s"
grace = "1s"
[run]
max_experiments = 2
[proposer]
kind = "command"
command = "python propose.py"
budget = "30s"
"""


def test_a_run_in_docker_keeps_an_improvement_and_records_a_crash(
    docker_image: str, tmp_path: Path
) -> None:
    files = {
        "value.py": "X = 5\n",
        "score.py": "from value import X\nprint(f'score: {(X - 2) ** 2}')\n",
        "propose.py": PROPOSE,
    }
    project = make_project(tmp_path / "project", files, DOCKER_SPEC.format(image=docker_image))
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "docker (self-check passed)" in result.stdout + result.stderr
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "keep", "crash"], rows
    assert rows[0]["value"] == 9.0 and rows[1]["value"] == 1.0
    # the proposer read its brief, which lives outside the worktree, inside the container
    assert rows[1]["rationale"].startswith("from 5 with a brief of")
    assert "ZeroDivisionError" in (rows[2]["why"] or "") + ratchet(project, "show", "2").stdout
    assert git(project, "show", "ratchet/default:value.py") == "X = 3"
    check_consistent(project)
