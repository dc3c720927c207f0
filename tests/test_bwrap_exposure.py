"""What the bwrap layer exposes of the host: exact paths only, no host socket, no $HOME.

Real bwrap runs with secrets planted where an earlier layout let them through: a file
beside a PATH entry under $HOME (`~/.docker/config.json` next to `~/.docker/bin`), a
sibling of a venv under a /tmp folder (another project's `.ratchet/`), a listening
Unix socket under $HOME (the one SSH_AUTH_SOCK names) and under /tmp. Every command runs
with HOME pointing at a fake home folder, so the real one is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import uuid
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import git, make_project, ratchet
from ratchet.sandbox import ProcessResult
from ratchet.sandbox import bwrap as bwrap_module
from ratchet.sandbox.bwrap import BwrapSandbox, bwrap_check, run_bwrap_check


def _skip_reason() -> str | None:
    """Skip where bwrap cannot run at all; a self-check failing on what it exposes is a
    failure these tests must show, not a reason to skip them."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian/Ubuntu package: bubblewrap)"
    ok, why = BwrapSandbox([]).self_check()
    cannot_run = why.startswith(("bwrap cannot start a sandbox", "bwrap self-check did not"))
    return f"bwrap cannot run here: {why}" if not ok and cannot_run else None


SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
SECRET = "registry-token-7f3a"

PROBE = """
import socket, sys
for path in sys.argv[1:]:
    try:
        with open(path) as file:
            print("READ", path, file.read().strip())
    except OSError as exc:
        print("unreadable", path, type(exc).__name__)
"""
CONNECT = """
import socket, sys
for address in sys.argv[1:]:
    target = "\\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX) as unix:
            unix.settimeout(2)
            unix.connect(target)
            print("REACHED", address)
    except OSError as exc:
        print("unreachable", address, type(exc).__name__)
"""


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    project = make_project(tmp_path / "project", {"train.py": "print('val_bpb: 1.0')\n"})
    path = project / ".ratchet" / "slots" / "0"
    git(project, "worktree", "add", "--detach", "-q", str(path), "HEAD")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake home: a docker tool folder on PATH beside a registry token, an ssh key."""
    home = tmp_path / "home"
    tool = home / ".docker" / "bin" / "docker-tool"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho docker-tool ran\n")
    tool.chmod(0o755)
    (home / ".docker" / "config.json").write_text(json.dumps({"auth": SECRET}))
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text(SECRET)
    return home


def listen(address: str) -> socket.socket:
    """A Unix socket listening at `address` (`@name`: an abstract one)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind("\0" + address[1:] if address.startswith("@") else address)
    server.listen()
    return server


@pytest.fixture
def sockets(tmp_path: Path, home: Path) -> Iterator[list[str]]:
    """Host sockets: an ssh agent's under $HOME, a docker.sock under /tmp, one inside a
    folder on PATH; bwrap must make every one unreachable."""
    paths = [str(home / "agent.sock"), str(tmp_path / "docker.sock")]
    paths.append(str(home / ".docker" / "bin" / "run.sock"))
    servers = [listen(path) for path in paths]
    try:
        yield paths
    finally:
        for server in servers:
            server.close()


def base_env(home: Path, *path: Path | str) -> dict[str, str]:
    entries = [str(p) for p in path] + os.environ["PATH"].split(os.pathsep)
    return {"PATH": os.pathsep.join(entries), "HOME": str(home), "LC_ALL": "C"}


def run(sandbox: BwrapSandbox, command: str, cwd: Path, env: dict[str, str]) -> ProcessResult:
    return sandbox.run(command, cwd, env, budget=30, grace=1)


def probe(*paths: Path | str) -> str:
    return f"{sys.executable} -c '{PROBE}' " + " ".join(str(p) for p in paths)


def connect(*addresses: str) -> str:
    return f"{sys.executable} -c '{CONNECT}' " + " ".join(addresses)


def test_a_path_entry_under_home_shows_that_folder_only(worktree: Path, home: Path) -> None:
    env = base_env(home, home / ".docker" / "bin")
    command = "docker-tool; " + probe(home / ".docker/config.json", home / ".ssh/id_ed25519")
    result = run(BwrapSandbox([]), command, worktree, env)
    assert result.output.startswith("docker-tool ran"), result.output
    assert SECRET not in result.output
    assert result.output.count("FileNotFoundError") == 2, result.output
    # only the folders bwrap made to hold the PATH entry: no config.json, no .ssh
    result = run(BwrapSandbox([]), "ls -A ~ ~/.docker", worktree, env)
    assert result.output.split() == [f"{home}:", ".docker", f"{home}/.docker:", "bin"]


def test_a_venv_under_tmp_shows_the_venv_not_its_parent(worktree: Path, tmp_path: Path) -> None:
    parent = tmp_path / "x"
    environment = parent / "venv"
    venv.create(environment, with_pip=False, symlinks=True)
    other = parent / ".ratchet" / "journal.db"
    other.parent.mkdir()
    other.write_text(SECRET)
    env = base_env(tmp_path / "home", environment / "bin")
    command = "python -c 'import sys; print(\"prefix\", sys.prefix)'; " + probe(other)
    result = run(BwrapSandbox([]), command + f"; ls -A {parent}", worktree, env)
    assert f"prefix {environment}" in result.output, result.output
    assert f"unreadable {other} FileNotFoundError" in result.output
    assert SECRET not in result.output
    assert result.output.strip().splitlines()[-1] == "venv"  # not .ratchet


def test_host_unix_sockets_cannot_be_reached(
    worktree: Path, home: Path, sockets: list[str]
) -> None:
    for path in sockets:  # each one answers on the host
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    env = {**base_env(home, home / ".docker" / "bin"), "SSH_AUTH_SOCK": sockets[0]}
    result = run(BwrapSandbox([]), connect(*sockets), worktree, env)
    assert "REACHED" not in result.output, result.output
    assert result.output.count("unreachable") == len(sockets), result.output


def test_abstract_sockets_are_private_unless_the_network_is_shared(
    worktree: Path, home: Path
) -> None:
    """Abstract Unix sockets belong to the network namespace: with `network = true` the
    host's are reachable (docs/sandboxing.md says so)."""
    address = f"@ratchet-test-{uuid.uuid4().hex}"
    with listen(address):
        closed = run(BwrapSandbox([]), connect(address), worktree, base_env(home))
        shared = run(BwrapSandbox([], network=True), connect(address), worktree, base_env(home))
    assert closed.output.startswith(f"unreachable {address}"), closed.output
    assert shared.output.startswith(f"REACHED {address}"), shared.output


def test_tmp_run_and_etc_secrets_are_not_there(worktree: Path, home: Path) -> None:
    planted = Path("/tmp") / f"ratchet-planted-{uuid.uuid4().hex}"
    planted.write_text(SECRET)
    try:
        command = probe(planted, "/etc/shadow", "/etc/ssl/private") + "; ls -A /run /var/tmp"
        result = run(BwrapSandbox([]), command, worktree, base_env(home))
    finally:
        planted.unlink()
    assert SECRET not in result.output
    assert result.output.count("unreadable") == 3, result.output
    lines = result.output.strip().splitlines()
    assert lines[3:] == ["/run:", "", "/var/tmp:"], result.output  # both empty


def test_a_pyenv_style_shim_and_plain_python_still_run(worktree: Path, home: Path) -> None:
    """A shim is a bash script that calls pyenv, which finds the version's binary: pyenv's
    own folders are shown, the rest of $HOME is not."""
    root = home / ".pyenv"
    version = root / "versions" / "9.9.9" / "bin"
    version.mkdir(parents=True)
    (version / "python3").symlink_to(sys.executable)
    (root / "version").write_text("9.9.9\n")
    (root / "libexec").mkdir()
    (root / "libexec" / "pyenv").write_text(
        "#!/usr/bin/env bash\nset -e\nshift\nprogram=$1; shift\n"
        'exec "$PYENV_ROOT/versions/$(cat "$PYENV_ROOT/version")/bin/$program" "$@"\n'
    )
    (root / "shims").mkdir()
    (root / "shims" / "python3").write_text(
        f'#!/usr/bin/env bash\nexport PYENV_ROOT="{root}"\n'
        f'exec "{root}/libexec/pyenv" exec "${{0##*/}}" "$@"\n'
    )
    for script in (root / "libexec" / "pyenv", root / "shims" / "python3"):
        script.chmod(0o755)
    env = {**base_env(home), "PATH": f"{root / 'shims'}:/usr/bin:/bin"}
    command = "python3 -c 'print(6 * 7)'; " + probe(home / ".docker/config.json")
    result = run(BwrapSandbox([]), command, worktree, env)
    assert result.output.startswith("42\n"), result.output
    assert "unreadable" in result.output and SECRET not in result.output
    plain = run(BwrapSandbox([]), "python3 -c 'print(6 * 7)'", worktree, base_env(home))
    assert plain.output.strip() == "42", plain.output


REAL_SHIM = Path.home() / ".pyenv" / "shims" / "python3"


@pytest.mark.skipif(not REAL_SHIM.is_file(), reason="no pyenv on this machine")
def test_this_machines_pyenv_shim_runs(worktree: Path, home: Path) -> None:
    env = {**base_env(home), "PATH": f"{REAL_SHIM.parent}:/usr/bin:/bin"}
    result = run(BwrapSandbox([]), "python3 -c 'print(6 * 7)'", worktree, env)
    assert result.output.strip() == "42", result.output


def test_a_node_modules_bin_entry_shows_its_node_modules(worktree: Path, tmp_path: Path) -> None:
    parent = tmp_path / "web"
    package = parent / "node_modules" / "pkg"
    (package / "bin").mkdir(parents=True)
    (package / "data.txt").write_text("package data\n")
    (package / "bin" / "tool").write_text(f'#!/bin/sh\ncat "{package}/data.txt"\n')
    (package / "bin" / "tool").chmod(0o755)
    (parent / "node_modules" / ".bin").mkdir()
    (parent / "node_modules" / ".bin" / "tool").symlink_to("../pkg/bin/tool")
    (parent / "secret.env").write_text(SECRET)
    env = base_env(tmp_path / "home", parent / "node_modules" / ".bin")
    result = run(BwrapSandbox([]), "tool; " + probe(parent / "secret.env"), worktree, env)
    assert result.output.startswith("package data\n"), result.output
    assert SECRET not in result.output and "unreadable" in result.output


def test_the_self_check_catches_a_socket_or_file_in_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The self-check is not a formality: shown $HOME and /tmp make it fail, saying why."""
    real = bwrap_module.toolchain_paths
    monkeypatch.setattr(
        bwrap_module,
        "toolchain_paths",
        lambda env, homes: [*real(env, homes), Path("/tmp"), Path.home()],
    )
    ok, why, proofs = run_bwrap_check.__wrapped__(shutil.which("bwrap"), False)
    assert not ok and proofs == ()
    assert why.startswith(("a file on the host was readable inside: /tmp/", "a Unix socket")), why


def test_the_self_check_and_doctor_say_what_was_proved(tmp_path: Path) -> None:
    ok, why, proofs = bwrap_check("bwrap", False)
    assert (ok, why) == (True, "self-check passed")
    assert any(p.startswith("Unix sockets listening under /tmp") for p in proofs), proofs
    result = ratchet(tmp_path, "doctor", "--json")
    layers = {row["layer"]: row for row in json.loads(result.stdout)}
    assert layers["bwrap"]["works"] is True
    assert "Unix sockets listening under /tmp" in layers["bwrap"]["why"]
    assert "files under /tmp" in layers["bwrap"]["why"]
