"""The `docker` layer: each command in a fresh container of a configured image.

Stronger limits than bwrap where a daemon runs (CPU, memory and process quotas, an image
the user chose), at the price of a daemon: ratchet only talks to the `docker` CLI, and
the budget still goes through `run_process`. Killing the CLI does not stop a container
(the daemon owns it), so every container gets a name and is removed by name after a
budget kill.

The container runs as the caller's uid:gid with every capability dropped, so files it
writes in the worktree belong to the user, and it can write exactly what the user can:
the daemon (root) makes the bind mounts, so a `.ratchet/` of mode 0700 above the slot
does not stand in the way. The CLI finds its daemon through the caller's `DOCKER_*`
variables (`DOCKER_HOST` for a rootless or remote daemon); they are never passed into
the container.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from ratchet.sandbox.bwrap import protected_paths
from ratchet.sandbox.process import ProcessResult, run_process

DAEMON_TIMEOUT = 5.0  # seconds `docker info` may take before the daemon counts as absent
REMOVE_TIMEOUT = 15.0
CHECK_BUDGET = 60.0
# The host's values of these would be wrong inside the image (its PATH, its home).
HOST_ONLY = frozenset({"PATH", "HOME", "HOSTNAME", "PWD", "OLDPWD", "SHLVL", "_", "TMPDIR"})
CLI_PREFIX = "DOCKER_"  # the CLI's own settings (DOCKER_HOST, DOCKER_CONFIG, ...)
NAME_PREFIX = "ratchet-"
LEFTOVER_NAME = re.compile(re.escape(NAME_PREFIX) + "[0-9a-f]{12}")
CONTAINER_HOME = "/tmp"  # the image's root is read-only; its /tmp is a private tmpfs


def bind_mount(source: Path, target: Path, *, read_only: bool = False) -> str:
    """A `--mount` value for a bind mount, quoted as docker's CSV parser reads it.

    Not `-v SRC:DST`: that splits on colons, and creates a missing source as an empty
    root-owned folder where `--mount` fails instead."""
    fields = ["type=bind", f"source={source}", f"target={target}"]
    if read_only:
        fields.append("readonly")
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def docker_argv(
    command: str,
    cwd: Path,
    image: str,
    *,
    network: bool = False,
    cpus: float | None = None,
    memory: str | None = None,
    pids: int = 4096,
    gpus: Sequence[int] = (),
    env_names: Sequence[str] = (),
    protected: Sequence[Path] = (),
    expose: Sequence[Path] = (),
    name: str | None = None,
    user: str | None = None,
    docker: str = "docker",
) -> list[str]:
    """The `docker run` command line for `command`, a pure function of its arguments.

    Environment variables are passed by name only (`-e NAME`): the CLI copies each value
    from its own environment, so values never appear in argv. The worktree is mounted at
    its host path, so paths in logs and errors read the same inside and out; `protected`
    paths (and the worktree's `.git`) are mounted again read-only on top of it, and
    `expose` paths outside it (a proposer's brief, say) are mounted read-only at theirs.
    """
    argv = [docker, "run", "--rm", "--init"]
    if name:
        argv += ["--name", name]
    argv += ["--network", "bridge" if network else "none"]
    if cpus is not None:
        argv += ["--cpus", f"{cpus:g}"]
    if memory is not None:
        argv += ["--memory", memory, "--memory-swap", memory]
    argv += ["--pids-limit", str(pids)]
    argv += ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    argv += ["--security-opt", "no-new-privileges"]
    if user:
        argv += ["--user", user]
    argv += ["--mount", bind_mount(cwd, cwd)]
    for path in [*protected, *expose]:
        argv += ["--mount", bind_mount(path, path, read_only=True)]
    argv += ["-w", str(cwd), "-e", f"HOME={CONTAINER_HOME}"]
    if gpus:
        # the quotes are part of the value: docker splits --gpus on commas otherwise
        argv += ["--gpus", '"device=' + ",".join(str(g) for g in gpus) + '"']
    for key in env_names:
        argv += ["-e", key]
    return [*argv, image, "/bin/sh", "-c", command]


class DockerSandbox:
    """Runs commands in containers; see the module docstring and docs/sandboxing.md."""

    name = "docker"

    def __init__(
        self,
        image: str,
        network: bool = False,
        cpus: float | None = None,
        memory: str | None = None,
        pids: int = 4096,
        gpus: Sequence[int] = (),
        protected: Sequence[str] = (),
        executable: str | None = None,
        expose: Sequence[str | Path] = (),
        user: str | None = None,
    ) -> None:
        self.image = image
        self.network = network
        self.cpus, self.memory, self.pids = cpus, memory, pids
        self.gpus = list(gpus)
        self.protected = list(protected)
        self.executable = executable or shutil.which("docker") or "docker"
        self.expose = [Path(p) for p in expose]
        # the caller's ids: what the container writes in the worktree is the user's
        self.user = user or f"{os.getuid()}:{os.getgid()}"

    def argv(self, command: str, cwd: Path, env: Mapping[str, str], name: str) -> list[str]:
        cwd = cwd.resolve()
        ro = [*protected_paths(cwd, self.protected), cwd / ".git"]
        return docker_argv(
            command,
            cwd,
            self.image,
            network=self.network,
            cpus=self.cpus,
            memory=self.memory,
            pids=self.pids,
            gpus=self.gpus,
            env_names=sorted(k for k in env if k not in HOST_ONLY and not k.startswith(CLI_PREFIX)),
            protected=[p for p in ro if p.exists() and not p.is_symlink()],
            # at the path the command is told (the daemon follows a link in the source)
            expose=sorted({p.absolute() for p in self.expose if p.exists()}),
            name=name,
            user=self.user,
            docker=self.executable,
        )

    def container_name(self) -> str:
        """A fresh name for one command's container, the handle to remove it by."""
        return NAME_PREFIX + uuid.uuid4().hex[:12]

    def run(
        self,
        command: str,
        cwd: Path,
        env: Mapping[str, str],
        budget: float,
        grace: float,
        pidfile: Path | None = None,
    ) -> ProcessResult:
        """Run `command` in a container; remove the container by name if the budget ran out.

        With `pidfile`, the container's name is recorded beside it while it runs: a
        ratchet killed outright leaves the container running (the pidfile only covers the
        CLI), and the next command in the same slot removes it first.
        """
        record = container_record(pidfile) if pidfile is not None else None
        if record is not None:
            self.remove_leftover(record)
        name = self.container_name()
        wrapped = "exec " + shlex.join(self.argv(command, cwd, env, name))
        # the CLI needs its own settings to reach the daemon the self-check talked to
        cli_env = {**cli_settings(), **env}
        if record is not None:
            record.write_text(name)
        try:
            result = run_process(wrapped, cwd, cli_env, budget, grace, pidfile)
        except BaseException:
            self._remove(name)
            raise
        if result.timed_out:
            self._remove(name)
        if record is not None:
            record.unlink(missing_ok=True)
        return result

    def remove_leftover(self, record: Path) -> bool:
        """Remove the container a killed ratchet left running; True if a record named one."""
        try:
            name = record.read_text().strip()
        except OSError:
            return False
        record.unlink(missing_ok=True)
        if not LEFTOVER_NAME.fullmatch(name):
            return False
        self._remove(name)
        return True

    def _remove(self, name: str) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [self.executable, "rm", "--force", "--volumes", name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=REMOVE_TIMEOUT,
                check=False,
            )

    def self_check(self) -> tuple[bool, str]:
        """Whether a daemon answers, the image is present, and a container can write its
        worktree; cached per process. Fails within about 5 s when no daemon answers."""
        return docker_self_check(self.executable, self.image, self.network)


def container_record(pidfile: Path) -> Path:
    """Where a slot's running container is named, beside the CLI's pidfile."""
    return pidfile.with_name(pidfile.name + ".container")


def cli_settings() -> dict[str, str]:
    """This process's `DOCKER_*` variables: which daemon the CLI talks to, and how."""
    return {k: v for k, v in os.environ.items() if k.startswith(CLI_PREFIX)}


@functools.cache
def daemon_check(executable: str = "docker") -> tuple[bool, str]:
    """Whether a Docker daemon answers `docker info` within DAEMON_TIMEOUT seconds."""
    if shutil.which(executable) is None:
        return False, f"{executable} CLI not found on PATH"
    try:
        proc = subprocess.run(
            [executable, "info", "--format", "{{.ServerVersion}}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DAEMON_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"no docker daemon answers: `docker info` took over {DAEMON_TIMEOUT:g} s"
    except OSError as exc:
        return False, f"no docker daemon answers: {exc}"
    if proc.returncode != 0 or not proc.stdout.strip():
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        return False, f"no docker daemon answers: {why[:200]}"
    return True, f"daemon {proc.stdout.strip()} answers"


@functools.cache
def docker_self_check(executable: str, image: str, network: bool) -> tuple[bool, str]:
    ok, why = daemon_check(executable)
    if not ok:
        return False, why
    try:
        inspect = subprocess.run(
            [executable, "image", "inspect", "--format", "{{.Id}}", image],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DAEMON_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot inspect image {image}: {exc}"
    if inspect.returncode != 0:
        return False, f"image {image} is not present locally (docker pull {image})"
    with tempfile.TemporaryDirectory(prefix="ratchet-docker-") as base:
        work = Path(base)
        sandbox = DockerSandbox(image, network, pids=64, executable=executable)
        result = sandbox.run("echo ok > inside.txt", work, {}, CHECK_BUDGET, 2.0)
        if not (work / "inside.txt").is_file():
            lines = [line for line in result.output.splitlines() if line.strip()]
            first = lines[-1] if lines else f"exit status {result.returncode}"
            return False, f"a container could not write its worktree: {first[:200]}"
    return True, "self-check passed"
