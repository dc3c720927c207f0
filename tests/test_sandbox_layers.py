"""The isolation layers with real processes: what each one stops, and what it lets through.

bwrap tests skip when bwrap is missing or fails its self-check here (inside an
unprivileged container, say). Containers of a real image: tests/test_docker_layer.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import adopting, command_line, living_descendants, wait_until

from conftest import git, make_project
from ratchet.errors import UsageError
from ratchet.sandbox import ProcessResult, ProcessSandbox, Sandbox
from ratchet.sandbox import bwrap as bwrap_module
from ratchet.sandbox import docker as docker_module
from ratchet.sandbox.bwrap import BwrapSandbox, bwrap_self_check, protected_paths
from ratchet.sandbox.docker import DockerSandbox, daemon_check, docker_argv
from ratchet.sandbox.select import choose_sandbox, doctor_report


def _bwrap_skip_reason() -> str | None:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian/Ubuntu package: bubblewrap)"
    ok, why = BwrapSandbox([]).self_check()
    return None if ok else f"bwrap fails its self-check here: {why}"


BWRAP_SKIP = _bwrap_skip_reason()
needs_bwrap = pytest.mark.skipif(BWRAP_SKIP is not None, reason=str(BWRAP_SKIP))
PROTECTED = ["prepare.py", "data"]


@pytest.fixture
def slot(tmp_path: Path) -> Path:
    """A real slot: a detached git worktree of a small project, whose `.git` is a file."""
    project = make_project(
        tmp_path / "project",
        {
            "prepare.py": "TIME_BUDGET = 300\n",
            "train.py": "print('val_bpb: 1.0')\n",
            "data/a.csv": "1,2\n",
            "data/deep/b.csv": "3,4\n",
        },
    )
    path = project / ".ratchet" / "slots" / "0"
    git(project, "worktree", "add", "--detach", "-q", str(path), "HEAD")
    return path


def env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(Path.home()), "LC_ALL": "C", **extra}


def run(sandbox: Sandbox, command: str, cwd: Path, budget: float = 20.0) -> ProcessResult:
    return sandbox.run(command, cwd, env(), budget=budget, grace=1.0)


@pytest.fixture
def sandbox() -> BwrapSandbox:
    return BwrapSandbox(PROTECTED)


# ---- bwrap: the filesystem ----


@needs_bwrap
def test_writes_inside_the_worktree_reach_the_host(sandbox: BwrapSandbox, slot: Path) -> None:
    result = run(sandbox, "echo new > out.txt && echo 'x = 1' >> train.py", slot)
    assert result.returncode == 0, result.output
    assert (slot / "out.txt").read_text() == "new\n"
    assert (slot / "train.py").read_text().endswith("x = 1\n")


@needs_bwrap
def test_writes_outside_the_worktree_fail_or_stay_inside(
    sandbox: BwrapSandbox, slot: Path, tmp_path: Path
) -> None:
    beside = tmp_path / "beside.txt"
    beside.write_text("host\n")
    for target in [Path(f"/ratchet-escaped-{uuid.uuid4().hex}"), Path("/usr/ratchet-escaped")]:
        result = run(sandbox, f"echo x > {target}", slot)
        assert result.returncode != 0
        assert "Read-only file system" in result.output
        assert not target.exists()
    # the host's /var/tmp is not there: a private, empty one is
    with tempfile.TemporaryDirectory(dir="/var/tmp") as var_tmp:
        target = Path(var_tmp) / "escaped.txt"
        result = run(sandbox, f"echo x > {target}", slot)
        assert result.returncode != 0
        assert "Directory nonexistent" in result.output
        assert not target.exists()
    # beside the worktree, under /tmp: the write lands in the private /tmp, not on the host
    run(sandbox, f"echo x >> {beside}; echo y > {tmp_path / 'new.txt'}", slot)
    assert beside.read_text() == "host\n"
    assert not (tmp_path / "new.txt").exists()


@needs_bwrap
def test_home_is_hidden_and_writes_there_vanish(sandbox: BwrapSandbox, slot: Path) -> None:
    home = Path.home()
    secret = home / f".ratchet-test-secret-{uuid.uuid4().hex}"
    written = home / f".ratchet-test-written-{uuid.uuid4().hex}"
    secret.write_text("hunter2\n")
    try:
        result = run(sandbox, f"cat {secret}; ls -a ~/.ssh; echo w > {written}; ls -a ~", slot)
    finally:
        secret.unlink()
    assert "hunter2" not in result.output
    assert "No such file or directory" in result.output
    assert not written.exists()
    assert ".ssh" not in result.output.split()
    # what starts programs stays: this test's Python, found through PATH, still runs
    result = run(sandbox, f"{sys.executable} -c 'print(6 * 7)'", slot)
    assert result.output.strip() == "42", result.output


@needs_bwrap
def test_expose_shows_a_folder_under_home_read_only(slot: Path) -> None:
    cache = Path.home() / f".ratchet-test-cache-{uuid.uuid4().hex}"
    cache.mkdir()
    try:
        (cache / "data.bin").write_text("cached\n")
        sandbox = BwrapSandbox(PROTECTED, expose=[cache])
        result = run(sandbox, f"cat {cache}/data.bin; echo x >> {cache}/data.bin", slot)
        assert "cached" in result.output
        assert "Read-only file system" in result.output
        assert (cache / "data.bin").read_text() == "cached\n"
    finally:
        shutil.rmtree(cache)


@needs_bwrap
def test_a_tool_on_path_under_tmp_stays_visible(sandbox: BwrapSandbox, slot: Path) -> None:
    """A venv or tool folder under /tmp, on PATH, survives the private /tmp, read-only."""
    tools = slot.parent.parent.parent.parent / "tools" / "bin"
    tools.mkdir(parents=True)
    (tools / "mytool").write_text("#!/bin/sh\necho tool ran\n")
    (tools / "mytool").chmod(0o755)
    passed = env()
    passed["PATH"] = f"{tools}{os.pathsep}{passed['PATH']}"
    result = sandbox.run("mytool; echo x >> $(command -v mytool)", slot, passed, 20, 1)
    assert result.output.startswith("tool ran"), result.output
    assert "Read-only file system" in result.output


@needs_bwrap
def test_protected_files_cannot_be_changed(sandbox: BwrapSandbox, slot: Path) -> None:
    before = (slot / "prepare.py").read_text()
    commands = [
        "echo x >> prepare.py",
        "rm prepare.py",
        "echo 'x = 1' > new.py && mv new.py prepare.py",
        "echo 9,9 >> data/deep/b.csv",
        "echo 9,9 > data/c.csv",
    ]
    for command in commands:
        result = run(sandbox, command, slot)
        assert result.returncode != 0, (command, result.output)
    assert (slot / "prepare.py").read_text() == before
    assert (slot / "data/deep/b.csv").read_text() == "3,4\n"
    assert not (slot / "data/c.csv").exists()


@needs_bwrap
def test_the_git_file_and_the_shared_git_folder_are_read_only(
    sandbox: BwrapSandbox, slot: Path
) -> None:
    dot_git = (slot / ".git").read_text()
    common = Path(git(slot, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    hook = common / "hooks" / "post-checkout"
    result = run(sandbox, "echo x >> .git; rm -f .git", slot)
    assert result.returncode != 0
    assert (slot / ".git").read_text() == dot_git
    result = run(sandbox, f"echo 'touch /tmp/pwned' > {hook}", slot)
    assert result.returncode != 0
    assert not hook.exists()
    # reading the repository still works inside, e.g. for a script that logs its commit
    result = run(sandbox, "git rev-parse HEAD", slot)
    assert result.output.strip() == git(slot, "rev-parse", "HEAD"), result.output


@needs_bwrap
def test_reading_outside_is_allowed(sandbox: BwrapSandbox, slot: Path) -> None:
    result = run(sandbox, "head -n 1 /etc/passwd", slot)
    assert result.returncode == 0
    assert result.output.strip() == Path("/etc/passwd").read_text().splitlines()[0]


@needs_bwrap
def test_tmp_is_private(sandbox: BwrapSandbox, slot: Path) -> None:
    name = f"/tmp/ratchet-probe-{uuid.uuid4().hex}"
    result = run(sandbox, f"echo inside > {name} && cat {name}", slot)
    assert result.output.strip() == "inside"
    assert not Path(name).exists()


def test_protected_paths_binds_whole_folders_and_single_files(tmp_path: Path) -> None:
    for name in [
        "prepare.py",
        "train.py",
        "data/a.csv",
        "data/deep/b.csv",
        "mix/a.csv",
        "mix/b.py",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "mix" / "link.csv").symlink_to(tmp_path / "train.py")
    found = protected_paths(tmp_path, ["prepare.py", "data", "mix/*.csv"])
    assert found == [tmp_path / "data", tmp_path / "mix" / "a.csv", tmp_path / "prepare.py"]
    assert protected_paths(tmp_path, []) == []


@needs_bwrap
def test_thousands_of_protected_files_go_through_an_args_file(tmp_path: Path) -> None:
    many = tmp_path / "wt" / "many"
    many.mkdir(parents=True)
    for i in range(bwrap_module.MAX_BINDS - 1):
        (many / f"f{i:04}.dat").write_text("x")
    (many / "notes.txt").write_text("editable\n")
    sandbox = BwrapSandbox(["many/*.dat"])
    assert len(" ".join(sandbox.argv("true", many.parent, env()))) > bwrap_module.MAX_INLINE
    # a budget no loaded machine reaches: a thousand binds take bwrap seconds there
    result = run(sandbox, "echo y >> many/f0998.dat; echo more >> many/notes.txt", many.parent,
                 budget=120)  # fmt: skip
    assert "Read-only file system" in result.output
    assert (many / "f0998.dat").read_text() == "x"
    assert (many / "notes.txt").read_text() == "editable\nmore\n"
    (many / "f0999.dat").write_text("x")
    (many / "f1000.dat").write_text("x")
    with pytest.raises(UsageError, match="1001 protected paths to make read-only"):
        run(sandbox, "true", many.parent)


# ---- bwrap: network and environment ----


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


CONNECT = (
    "{python} -c 'import socket\n"
    "try:\n"
    '    socket.create_connection(("127.0.0.1", {port}), timeout=2); print("connected")\n'
    "except OSError as e:\n"
    '    print("refused", e)\''
)


@needs_bwrap
def test_no_network_by_default(sandbox: BwrapSandbox, slot: Path, listener: int) -> None:
    result = run(sandbox, CONNECT.format(python=sys.executable, port=listener), slot)
    assert result.output.startswith("refused"), result.output


@needs_bwrap
def test_network_true_shares_the_hosts_network(slot: Path, listener: int) -> None:
    sandbox = BwrapSandbox(PROTECTED, network=True)
    result = run(sandbox, CONNECT.format(python=sys.executable, port=listener), slot)
    assert result.output.startswith("connected"), result.output


@needs_bwrap
def test_the_child_sees_exactly_the_environment_passed(
    sandbox: BwrapSandbox, slot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATCHET_HOST_ONLY", "leak")
    passed = env(RATCHET_PROBE="probe-value")
    result = sandbox.run("env", slot, passed, budget=20, grace=1)
    seen = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    assert seen["RATCHET_PROBE"] == "probe-value"
    assert "RATCHET_HOST_ONLY" not in seen
    assert set(passed) <= set(seen)
    assert set(seen) - set(passed) <= {"PWD", "SHLVL", "_", "OLDPWD"}
    # values travel through exec, not bwrap's command line, which /proc shows to anyone
    assert not any("probe-value" in arg for arg in sandbox.argv("env", slot, passed))


# ---- the budget kill, under both layers ----

TREE = (
    "trap '' TERM; "
    "sh -c \"trap '' TERM; echo \\$\\$ > {pidfile}; exec sleep {marker}\" & "
    "sleep {marker}"
)


def _marked(marker: str) -> list[int]:
    """Live `sleep MARKER` processes among this test's descendants: inside `adopting`,
    that includes orphans (a setsid'd child, whatever a killed sandbox left), in any PID
    namespace. Never a machine-wide look."""
    return [p for p in living_descendants() if command_line(p) == f"sleep {marker}"]


LAYERS = [
    pytest.param(lambda: ProcessSandbox(), id="process"),
    pytest.param(lambda: BwrapSandbox(PROTECTED), id="bwrap", marks=needs_bwrap),
]


@pytest.mark.parametrize("make", LAYERS)
def test_budget_kills_a_tree_that_ignores_sigterm(make: Callable[[], Sandbox], slot: Path) -> None:
    layer = make()
    marker = f"{900 + uuid.uuid4().int % 99}.{uuid.uuid4().int % 10**6:06}"
    pidfile = slot / "grandchild.pid"
    results: list[ProcessResult] = []

    def target() -> None:
        command = TREE.format(pidfile=pidfile, marker=marker)
        results.append(layer.run(command, slot, env(), budget=1.5, grace=0.5))

    with adopting():
        thread = threading.Thread(target=target)
        thread.start()
        wait_until(lambda: len(_marked(marker)) == 2, "both sleeps of the tree to start", 5)
        thread.join(15)
        assert not thread.is_alive()
        assert results[0].timed_out and results[0].returncode is None
        assert 1.5 <= results[0].duration < 5
        wait_until(lambda: not _marked(marker), "every marked process to end", 2)
    assert pidfile.read_text().strip().isdigit()
    if layer.name == "process":  # same PID namespace: the grandchild's own pid is gone
        pid = int(pidfile.read_text())
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def _escaping(marker: str) -> str:
    """A command whose child leaves the process group (setsid), then `sleep MARKER`s; the
    command ends only once the child has left (its pid written after setsid), not after
    a sleep that a loaded machine could outlast."""
    child = f"echo \\$\\$ > escaped.pid; exec sleep {marker}"
    return (
        f'setsid sh -c "{child}" > /dev/null 2>&1 < /dev/null & '
        "n=0; until [ -s escaped.pid ] || [ $n -ge 600 ]; do n=$((n + 1)); sleep 0.05; done"
    )


@needs_bwrap
def test_bwrap_kills_a_child_that_left_the_process_group(slot: Path) -> None:
    """setsid escapes the process layer's group kill; the PID namespace catches it."""
    marker = f"{800 + uuid.uuid4().int % 99}.{uuid.uuid4().int % 10**6:06}"
    with adopting():
        result = run(BwrapSandbox(PROTECTED), _escaping(marker), slot)
        assert result.returncode == 0
        assert (slot / "escaped.pid").read_text().strip()  # it did leave the group
        wait_until(lambda: not _marked(marker), "every marked process to end", 2)


def test_process_layer_lets_a_setsid_child_escape(slot: Path) -> None:
    """The documented limit of the process layer, so docs/sandboxing.md stays true."""
    marker = f"{700 + uuid.uuid4().int % 99}.{uuid.uuid4().int % 10**6:06}"
    with adopting():  # the escaped child is re-parented to this test, and killed after
        run(ProcessSandbox(), _escaping(marker), slot)
        wait_until(lambda: len(_marked(marker)) == 1, "one child to outlive the sandbox", 5)


@needs_bwrap
def test_the_sandbox_dies_with_a_killed_ratchet(slot: Path) -> None:
    """--die-with-parent: SIGKILL to the process running bwrap ends everything inside."""
    marker = f"{600 + uuid.uuid4().int % 99}.{uuid.uuid4().int % 10**6:06}"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from ratchet.sandbox.bwrap import BwrapSandbox\n"
        f"BwrapSandbox([]).run('sleep {marker} & sleep {marker}', Path(sys.argv[1]),"
        " dict(os.environ), budget=60, grace=1)\n"
    )
    with adopting():
        parent = subprocess.Popen([sys.executable, "-c", script, str(slot)])
        try:
            wait_until(lambda: len(_marked(marker)) == 2, "both sleeps in the sandbox to start", 10)
            parent.kill()
            parent.wait()
            wait_until(lambda: not _marked(marker), "every marked process to end", 3)
        finally:
            parent.kill()
            parent.wait()


# ---- bwrap: self-check ----


def test_bwrap_self_check_fails_with_a_reason() -> None:
    ok, why = bwrap_self_check("/bin/false", False)
    assert not ok and "cannot start a sandbox" in why
    ok, why = bwrap_self_check("no-such-bwrap-here", False)
    assert not ok and "not found" in why


@needs_bwrap
def test_bwrap_self_check_passes_here() -> None:
    assert BwrapSandbox([]).self_check() == (True, "self-check passed")
    assert BwrapSandbox([], network=True).self_check() == (True, "self-check passed")


# ---- docker ----


def test_docker_argv_builds_the_documented_command(tmp_path: Path) -> None:
    argv = docker_argv(
        "python train.py",
        tmp_path,
        "python:3.11",
        cpus=2.0,
        memory="8g",
        pids=256,
        gpus=[0, 2],
        env_names=["SEED"],
        protected=[tmp_path / "prepare.py"],
        name="ratchet-abc",
        user="1000:1000",
    )
    text = " ".join(argv)
    assert argv[:4] == ["docker", "run", "--rm", "--init"]
    assert argv[-4:] == ["python:3.11", "/bin/sh", "-c", "python train.py"]
    for flags in [
        "--name ratchet-abc",
        "--network none",
        "--cpus 2",
        "--memory 8g --memory-swap 8g",
        "--pids-limit 256",
        "--read-only --tmpfs /tmp",
        "--cap-drop ALL",
        "--user 1000:1000",
        f"--mount type=bind,source={tmp_path},target={tmp_path}",
        f"--mount type=bind,source={tmp_path}/prepare.py,target={tmp_path}/prepare.py,readonly",
        f"-w {tmp_path}",
        "-e HOME=/tmp",
        '--gpus "device=0,2"',
        "-e SEED",
    ]:
        assert flags in text, flags
    minimal = docker_argv("true", tmp_path, "img", network=True)
    assert "--network bridge" in " ".join(minimal)
    assert not {"--cpus", "--memory", "--gpus"} & set(minimal)
    # docker reads --mount as CSV: a comma or a quote in a path is quoted, not split
    odd = tmp_path / 'a,b"c'
    assert f'"source={tmp_path}/a,b""c"' in " ".join(docker_argv("true", odd, "img"))


def test_docker_sandbox_passes_env_names_only_and_mounts_protected(slot: Path) -> None:
    brief = slot.parent.parent / "brief-0.json"
    brief.write_text("{}")
    missing = slot.parent.parent / "brief-1.json"
    sandbox = DockerSandbox("img", protected=PROTECTED, expose=[brief, missing])
    variables = env(SECRET_TOKEN="s3cr3t-value", DOCKER_HOST="unix:///run/user/1000/docker.sock")
    argv = sandbox.argv("true", slot, variables, "ratchet-x")
    text = " ".join(argv)
    assert "-e SECRET_TOKEN" in text and "s3cr3t-value" not in text
    assert "-e PATH" not in text and "-e HOME " not in text
    assert "DOCKER_HOST" not in text  # the CLI's setting, not the container's
    assert f"source={brief},target={brief},readonly" in text
    assert str(missing) not in text  # a missing source would be an error, not a mount
    for path in ["prepare.py", "data", ".git"]:
        assert f"source={slot / path},target={slot / path},readonly" in text


def test_docker_self_check_fails_fast_without_a_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuses = tmp_path / "docker-refuses"
    refuses.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    hangs = tmp_path / "docker-hangs"
    hangs.write_text("#!/bin/sh\nexec sleep 30\n")
    for fake in (refuses, hangs):
        fake.chmod(0o755)
    monkeypatch.setattr(docker_module, "DAEMON_TIMEOUT", 0.5)
    start = time.monotonic()
    ok, why = DockerSandbox("img", executable=str(refuses)).self_check()
    assert not ok and why == "no docker daemon answers: Cannot connect to the Docker daemon"
    ok, why = DockerSandbox("img", executable=str(hangs)).self_check()
    assert not ok and why.startswith("no docker daemon answers: `docker info` took over")
    assert time.monotonic() - start < 5
    ok, why = daemon_check(str(tmp_path / "absent"))
    assert not ok and "not found" in why


# a container of a real image: tests/test_docker_layer.py


# ---- choosing a layer ----


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH holding a `docker` CLI whose daemon never answers."""
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


@pytest.fixture
def no_docker(fake_bin: Path) -> None:
    """Whatever this machine has, `docker` here is a CLI whose daemon never answers."""


@pytest.fixture
def no_bwrap(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds only the fake docker, so bwrap is not found."""
    monkeypatch.setenv("PATH", str(fake_bin))


@needs_bwrap
@pytest.mark.usefixtures("no_docker")
def test_auto_takes_bwrap_and_says_why_not_docker() -> None:
    sandbox, note = choose_sandbox("auto", PROTECTED, False, "python:3.11")
    assert sandbox.name == "bwrap"
    assert note.startswith("bwrap (self-check passed); docker unavailable (no docker daemon")
    sandbox, note = choose_sandbox("auto", PROTECTED, False, None)
    assert (sandbox.name, note) == ("bwrap", "bwrap (self-check passed)")
    assert isinstance(sandbox, BwrapSandbox) and sandbox.protected == PROTECTED


@pytest.mark.usefixtures("no_bwrap")
def test_auto_falls_back_to_process_with_the_reasons() -> None:
    sandbox, note = choose_sandbox("auto", PROTECTED, False, "img")
    assert sandbox.name == "process"
    assert note.startswith("process: docker unavailable (no docker daemon answers")
    assert "; bwrap unavailable (bwrap not found on PATH" in note


@pytest.mark.usefixtures("no_docker")
def test_an_explicit_kind_that_fails_its_check_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(UsageError, match="sandbox 'docker' is not usable here: no docker"):
        choose_sandbox("docker", PROTECTED, False, "img")
    with pytest.raises(UsageError, match="needs an image"):
        choose_sandbox("docker", PROTECTED, False, None)
    with pytest.raises(UsageError, match="unknown sandbox kind 'vm'"):
        choose_sandbox("vm", PROTECTED, False, None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match="sandbox 'bwrap' is not usable here: bwrap not found"):
        choose_sandbox("bwrap", PROTECTED, False, None)
    sandbox, note = choose_sandbox("process", PROTECTED, False, None)
    assert sandbox.name == "process" and note.startswith("process (")


@pytest.mark.usefixtures("no_docker")
def test_doctor_reports_every_layer() -> None:
    report = doctor_report()
    assert [name for name, _, _ in report] == ["process", "bwrap", "docker"]
    assert report[0][1] is True
    assert report[1][1] is (BWRAP_SKIP is None)
    assert report[2][1] is False and report[2][2].startswith("no docker daemon answers")


# ---- both layers: resource limits ----


@pytest.mark.parametrize("layer", ["process", "bwrap"])
def test_no_core_dumps_and_the_memory_limit_reach_the_command(slot: Path, layer: str) -> None:
    if layer == "bwrap" and BWRAP_SKIP is not None:
        pytest.skip(BWRAP_SKIP)
    limited = ProcessSandbox(memory=2**30) if layer == "process" else BwrapSandbox([], memory=2**30)
    result = run(limited, "ulimit -c; ulimit -v", slot)
    assert result.returncode == 0, result.output
    assert result.output.split() == ["0", str(2**30 // 1024)]
    plain = ProcessSandbox() if layer == "process" else BwrapSandbox([])
    assert run(plain, "ulimit -c", slot).output.split() == ["0"]
