"""A Docker daemon and a small Python image for tests of the `docker` layer, no registry.

No image registry is reachable from the machines these tests run on, so the image is
built from this machine's own files: a Python interpreter, its standard library, `sh`,
and exactly the shared libraries they load, streamed as a tar to `docker import`.

The daemon is the one that answers already (`.ci/run` starts one), or, as root with
`dockerd` installed, a private one this session starts with its own socket, data and
state folders and no network set-up (no bridge, no iptables rules), and stops by its
pid at the end. Without either, the tests that need them skip with the daemon's reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ratchet.sandbox import docker as docker_module

IMAGE_REPO = "ratchet-test-python"
DAEMON_START_TIMEOUT = 60.0
# Parts of the standard library no test needs: a static libpython, Tk, the test suite.
STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
}
SHELLS = ("/usr/bin/dash", "/bin/dash", "/bin/sh")


@dataclass(frozen=True)
class DockerTarget:
    """A daemon that answers, and the tag of the test image it holds."""

    image: str
    host: str  # DOCKER_HOST for the CLI; "" for the CLI's default
    started: bool  # whether this session started the daemon


# ---- the image ----


def _interpreter() -> Path:
    """A python3 to put in the image: Debian's if present, else the one running the tests.

    Debian's /usr/bin/python3.11 keeps its standard library in /usr/lib/python3.11; a
    pyenv build keeps it under its own prefix. Either works, since the image holds the
    interpreter and its library at the paths they have here."""
    debian = Path(f"/usr/bin/python3.{sys.version_info.minor}")
    if debian.is_file():
        return debian
    return Path(sys.executable).resolve()


def _stdlib(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['stdlib'])"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every library `ldd` names for `binaries`, with the loader itself."""
    found: set[Path] = set()
    for chunk in range(0, len(binaries), 50):
        out = subprocess.run(
            ["ldd", *map(str, binaries[chunk : chunk + 50])],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1:
                target = parts[parts.index("=>") + 1]
            elif parts and parts[0].startswith("/") and "(0x" in line:
                target = parts[0]  # the loader: /lib64/ld-linux-x86-64.so.2 (0x...)
            else:
                continue
            if target.startswith("/"):
                found.add(Path(target))
    return found


def _image_paths() -> tuple[list[Path], dict[str, str]]:
    """The host files the image holds, and the links it adds (name -> target)."""
    python = _interpreter()
    shell = next(Path(s) for s in SHELLS if Path(s).exists())
    stdlib = _stdlib(python)
    files: list[Path] = [python, shell.resolve()]
    for path in sorted(stdlib.rglob("*")):
        relative = path.relative_to(stdlib).parts
        if relative[0] in STDLIB_SKIP or relative[0].startswith("config-"):
            continue
        if path.is_file() and not path.is_symlink():
            files.append(path)
    extensions = [p for p in files if p.suffix == ".so"]
    libraries = _shared_libraries([python, shell.resolve(), *extensions])
    for library in sorted(libraries):
        files.append(library)
        if library.is_symlink():
            files.append(library.resolve())
    if Path("/etc/ld.so.cache").is_file():
        files.append(Path("/etc/ld.so.cache"))
    links = {
        "/usr/bin/sh": str(shell.resolve()),
        "/usr/bin/python3": str(python),
        "/usr/bin/python": str(python),
    }
    # merged /usr: /bin, /lib and /lib64 are links into /usr on Debian; a library found
    # through /lib or /lib64 is stored under /usr, where the links resolve
    for top in ("bin", "lib", "lib64"):
        if Path(f"/{top}").is_symlink():
            links[f"/{top}"] = os.readlink(f"/{top}")
    return sorted(set(files)), links


def _tar_name(path: str) -> str:
    """Where `path` lives in the image: under /usr where a merged-usr link points there."""
    for top in ("/bin/", "/lib/", "/lib64/"):
        link = top.rstrip("/")
        if path.startswith(top) and Path(link).is_symlink():
            target = os.readlink(link).strip("/")
            return f"{target}/{path[len(top) :]}"
    return path.lstrip("/")


def image_tar() -> tuple[bytes, str]:
    """The image as an uncompressed tar, and a digest of what went into it."""
    files, links = _image_paths()
    buffer = io.BytesIO()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("tmp", "proc", "dev", "sys", "etc", "usr/bin", "usr/lib"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        stored: set[str] = set()
        for path in files:
            name = _tar_name(str(path))
            if name in stored:
                continue  # the same file, found through /lib and through /usr/lib
            stored.add(name)
            if path.is_symlink():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                tar.addfile(info)
            else:
                tar.add(str(path), arcname=name, recursive=False)
            stat = path.lstat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        for name, target in sorted(links.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
            digest.update(f"{name}->{target}\n".encode())
    return buffer.getvalue(), digest.hexdigest()[:12]


def import_image(env: dict[str, str]) -> str:
    """Import the test image unless the daemon holds this exact one already; its tag."""
    data, digest = image_tar()
    tag = f"{IMAGE_REPO}:{digest}"
    present = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, env=env, check=False
    )
    if present.returncode != 0:
        subprocess.run(
            ["docker", "import", "--change", "ENV PATH=/usr/bin:/bin", "-", tag],
            input=data,
            capture_output=True,
            env=env,
            check=True,
        )
    return tag


# ---- the daemon ----


def daemon_answers(env: dict[str, str], timeout: float = 5.0) -> tuple[bool, str]:
    """Whether `docker info` gets an answer; else the CLI's last line as the reason."""
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"`docker info` took over {timeout:g} s"
    if proc.returncode == 0 and proc.stdout.strip():
        return True, proc.stdout.strip()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return False, lines[-1].strip() if lines else f"exit status {proc.returncode}"


def _log_tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) or "no output"


@contextlib.contextmanager
def private_daemon() -> Iterator[str]:
    """Start a dockerd of our own; yield its DOCKER_HOST; stop it by its pid.

    Its socket, images and state live in a fresh temporary folder, and it sets up no
    bridge and no iptables rules, so it changes nothing a system daemon relies on.
    Raises RuntimeError with the daemon's own last log lines when it does not start."""
    root = Path(tempfile.mkdtemp(prefix="ratchet-dockerd-"))
    socket_path = root / "docker.sock"
    host = f"unix://{socket_path}"
    log = root / "dockerd.log"
    argv = [
        shutil.which("dockerd") or "dockerd",
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "dockerd.pid"),
        "--host", host,
        "--bridge", "none",
        "--iptables=false",
        "--ip-masq=false",
    ]  # fmt: skip
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        env = {**os.environ, "DOCKER_HOST": host}
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while True:
            if daemon.poll() is not None:
                raise RuntimeError(f"dockerd exited ({daemon.returncode}): {_log_tail(log)}")
            # the socket appears only once the API listens; then ask the daemon itself
            if socket_path.exists() and daemon_answers(env)[0]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd did not answer in {DAEMON_START_TIMEOUT:g} s: {_log_tail(log)}"
                )
            time.sleep(0.2)
        yield host
    finally:
        daemon.terminate()  # dockerd stops its containers and its containerd on SIGTERM
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(root, ignore_errors=True)


def _clear_docker_caches() -> None:
    docker_module.daemon_check.cache_clear()
    docker_module.docker_self_check.cache_clear()


@contextlib.contextmanager
def docker_target() -> Iterator[DockerTarget]:
    """The daemon and image for this session; pytest.skip with the reason if none."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed (Debian/Ubuntu package: docker.io)")
    ok, why = daemon_answers(dict(os.environ))
    if ok:
        yield DockerTarget(import_image(dict(os.environ)), os.environ.get("DOCKER_HOST", ""), False)
        return
    if shutil.which("dockerd") is None:
        pytest.skip(f"no docker daemon answers ({why}) and dockerd is not installed")
    if os.geteuid() != 0:
        pytest.skip(f"no docker daemon answers ({why}) and starting dockerd needs root")
    with contextlib.ExitStack() as stack:
        try:
            host = stack.enter_context(private_daemon())
        except RuntimeError as exc:
            pytest.skip(f"no docker daemon answers ({why}) and one could not start: {exc}")
        previous = os.environ.get("DOCKER_HOST")
        # ratchet's own CLI calls and `ratchet run` subprocesses find the daemon through it
        os.environ["DOCKER_HOST"] = host
        _clear_docker_caches()
        try:
            yield DockerTarget(import_image(dict(os.environ)), host, True)
        finally:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous
            _clear_docker_caches()


@pytest.fixture(scope="session")
def docker_image() -> Iterator[str]:
    """The tag of a Python image in a daemon that answers (see the module docstring)."""
    with docker_target() as target:
        yield target.image
