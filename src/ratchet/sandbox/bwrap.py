"""The `bwrap` layer: the process layer's budget, inside a bubblewrap sandbox.

The command sees an empty root holding, read-only, only the system and the exact paths
it needs (`bwrap_root`), its worktree writable (there the protected files and the `.git`
file stay read-only), private /tmp, /var/tmp, /run and $HOME, no host socket, no network, its own PID namespace, and no capabilities, as uid 65534 in a user
namespace. Budget, kill, output capping and the pidfile stay in `run_process`: bwrap is
only a prefix on the command line, and killing bwrap's process group ends the sandbox,
because `--die-with-parent` ties the namespace's init to bwrap and the kernel kills
every process of a PID namespace whose init dies.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import glob as pyglob
import os
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from wcmatch import glob

from ratchet.errors import UsageError
from ratchet.integrity import expand_patterns
from ratchet.sandbox.bwrap_root import PRIVATE, inside, sockets_in, system_root, toolchain_paths
from ratchet.sandbox.process import ProcessResult, limit_resources, run_process
from ratchet.specmodel import GLOB_FLAGS

NOBODY = 65534  # the uid and gid the command runs as inside the user namespace
# One argument to /bin/sh -c may not exceed 128 KiB (MAX_ARG_STRLEN); past this many
# characters the protected binds go through a file that bwrap reads with --args.
MAX_INLINE = 100_000
# Mounting grows quadratic in their number (measured here: 100 binds 23 ms, 1,000 binds
# 0.6 s, 2,500 binds 3.8 s per run), and bwrap takes 9,000 arguments at most.
MAX_BINDS = 1000
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")
CHECK_BUDGET = 10.0


def protected_paths(root: Path, patterns: list[str]) -> list[Path]:
    """The files and folders under `root` to bind read-only so that `patterns` hold.

    The same matching as `ratchet.spec.matches` (plain names protect their folder's
    files). A folder whose every file is protected is bound whole, which keeps a
    protected `data/` with 20,000 files down to one mount and stops files from being
    added there. Symlinks are never bound themselves (a mount follows them); one inside a
    folder bound whole is read-only with it. `.git` is left to the caller.
    """
    if not patterns:
        return []
    matcher = glob.compile(expand_patterns(patterns), flags=GLOB_FLAGS)

    def walk(folder: Path, prefix: str) -> tuple[bool, list[Path]]:
        binds: list[Path] = []
        whole = True
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return False, []
        if not entries:
            return False, []
        for entry in entries:
            if entry.name == ".git":
                whole = False
                continue
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                sub_whole, sub_binds = walk(Path(entry.path), rel + "/")
                binds += [Path(entry.path)] if sub_whole else sub_binds
                whole = whole and sub_whole
            elif not matcher.match(rel):
                whole = False
            elif not entry.is_symlink():
                binds.append(Path(entry.path))
        return whole, binds

    return walk(root, "")[1]


def git_dirs(worktree: Path) -> list[Path]:
    """The git folders a worktree's `.git` file points at: its own and the shared one."""
    dot_git = worktree / ".git"
    try:
        line = dot_git.read_text().strip() if dot_git.is_file() else ""
    except OSError:
        return []
    if not line.startswith("gitdir:"):
        return [dot_git] if dot_git.is_dir() else []
    gitdir = (worktree / line.removeprefix("gitdir:").strip()).resolve()
    found = [gitdir]
    with contextlib.suppress(OSError):
        found.append((gitdir / (gitdir / "commondir").read_text().strip()).resolve())
    return [p for p in found if p.is_dir()]


def gpu_devices() -> list[str]:
    """The GPU device nodes of this machine, which bwrap's minimal /dev leaves out."""
    return sorted({p for pattern in GPU_DEVICES for p in pyglob.glob(pattern)})


class BwrapSandbox:
    """Runs commands under bubblewrap; see the module docstring and docs/sandboxing.md.

    `protected` are the spec's globs, relative to the worktree (the `cwd` of `run`).
    `expose` names host paths to show read-only (a dataset cache under $HOME, say).
    """

    name = "bwrap"

    def __init__(
        self,
        protected: list[str],
        network: bool = False,
        *,
        expose: Sequence[str | Path] = (),
        executable: str | None = None,
        memory: int | None = None,
    ) -> None:
        self.limits = limit_resources(memory)
        self.protected = list(protected)
        self.network = network
        self.expose = [Path(os.path.abspath(p)) for p in expose]
        self.executable = executable or shutil.which("bwrap") or "bwrap"
        self.hosts: Path | None = None  # shown as /etc/hosts instead of the host's

    def confined(self, expose: Sequence[Path], hosts: Path) -> BwrapSandbox:
        """This sandbox without network, showing `expose` too and `hosts` as /etc/hosts:
        for a command whose one way out is a socket in `expose` (`sandbox.forward`)."""
        box = copy.copy(self)
        box.network = False
        box.expose = [*self.expose, *(Path(os.path.abspath(p)) for p in expose)]
        box.hosts = hosts
        return box

    def options(self, cwd: Path, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """bwrap's options up to the worktree bind, and the read-only binds inside it.

        Split in two because the second part can be long: `run` moves it into a file.
        Order matters, since a later mount covers an earlier one: the empty root and the
        system parts, then private tmpfs's for /tmp, /var/tmp, /run and $HOME, then the
        exact paths to show read-only (toolchains, `expose`, the repository's git folders,
        so that git works and its hooks stay read-only), `/dev/null` over any socket at
        their top, then the worktree writable, the root made read-only, and last the
        worktree's protected paths and `.git` read-only again.
        """
        cwd = cwd.resolve()
        head = [*system_root(self.hosts), "--dev", "/dev"]
        for device in gpu_devices():
            head += ["--dev-bind", device, device]
        head += ["--proc", "/proc"]
        home = Path(env.get("HOME") or Path.home())
        homes = [p for p in dict.fromkeys([home, Path.home()]) if p.is_absolute()]
        for folder in [*PRIVATE, *([str(home)] if home.is_absolute() else [])]:
            if folder != "/" and not inside(Path(folder), cwd):
                head += ["--tmpfs", folder]
        if Path("/var/run").is_symlink():
            head += ["--symlink", os.readlink("/var/run"), "/var/run"]
        shown = [*toolchain_paths(env, homes), *self.expose, *git_dirs(cwd)]
        shown = [p for p in dict.fromkeys(shown) if p.exists()]
        for path in shown:
            head += ["--ro-bind", str(path), str(path)]
            if path.resolve() != path:  # a link in its path: show it where it leads too
                head += ["--ro-bind", str(path.resolve()), str(path.resolve())]
        for socket_path in sockets_in(shown):
            head += ["--ro-bind", "/dev/null", str(socket_path)]
        head += ["--bind", str(cwd), str(cwd), "--remount-ro", "/", "--chdir", str(cwd)]
        head += ["--unshare-all", *(["--share-net"] if self.network else [])]
        head += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
        head += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        binds: list[str] = []
        for path in [*protected_paths(cwd, self.protected), cwd / ".git"]:
            if path.exists() and not path.is_symlink():
                binds += ["--ro-bind", str(path), str(path)]
        return head, binds

    def argv(self, command: str, cwd: Path, env: Mapping[str, str]) -> list[str]:
        """The whole bwrap command line for `command`, for logs and tests."""
        head, binds = self.options(cwd, env)
        return [self.executable, *head, *binds, "--", "/bin/sh", "-c", command]

    def run(
        self,
        command: str,
        cwd: Path,
        env: Mapping[str, str],
        budget: float,
        grace: float,
        pidfile: Path | None = None,
    ) -> ProcessResult:
        """Run `command` sandboxed; the environment goes through exec, not bwrap's argv.

        `--setenv` would put allow-listed secrets on a command line that any user can
        read in /proc; passing `env` to the process keeps them where they were. `exec`
        makes bwrap the process run_process started, so bwrap's parent is ratchet and
        `--die-with-parent` fires if ratchet itself is killed.
        """
        head, binds = self.options(cwd, env)
        tail = ["--", "/bin/sh", "-c", command]
        if len(binds) // 3 > MAX_BINDS:
            raise UsageError(
                f"{len(binds) // 3} protected paths to make read-only under bwrap, more than "
                f"{MAX_BINDS}: keep protected and editable files in separate folders, so "
                "that each protected folder is mounted as a whole"
            )
        wrapped = self.limits + "exec " + shlex.join([self.executable, *head, *binds, *tail])
        if len(wrapped) <= MAX_INLINE:
            return run_process(wrapped, cwd, env, budget, grace, pidfile)
        with tempfile.NamedTemporaryFile("wb", prefix="ratchet-bwrap-", suffix=".args") as args:
            args.write(b"".join(arg.encode() + b"\0" for arg in binds))
            args.flush()
            line = shlex.join([self.executable, *head, "--args", "3", *tail])
            wrapped = f"{self.limits}exec {line} 3< {shlex.quote(args.name)}"
            return run_process(wrapped, cwd, env, budget, grace, pidfile)

    def self_check(self) -> tuple[bool, str]:
        """Whether bwrap works here with these settings, and why not; cached per process."""
        return bwrap_self_check(self.executable, self.network)

    def proofs(self) -> tuple[str, ...]:
        """What the (cached) self-check proved, for `ratchet doctor`; empty if it failed."""
        return bwrap_check(self.executable, self.network)[2]


CHECK_PROBE = """
import socket, sys
port, paths = int(sys.argv[1]), sys.argv[2:]
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    print("net:connected")
except OSError as exc:
    print("net:refused", exc)
for path in paths:
    if path.endswith(".sock"):
        try:
            with socket.socket(socket.AF_UNIX) as unix:
                unix.settimeout(2)
                unix.connect(path)
            print("unix:reached", path)
        except OSError:
            print("unix:unreachable", path)
    else:
        try:
            with open(path) as file:
                file.read()
            print("file:read", path)
        except OSError:
            print("file:unreadable", path)
"""
CHECK_SCRIPT = """
echo ok > inside.txt
echo breach >> {outside} 2>/dev/null
{python} -c {probe} {port} {paths}
"""


def _plant(folder: Path, stack: contextlib.ExitStack) -> list[Path]:
    """A secret file and a listening Unix socket in `folder`, for the self-check."""
    secret, sock = folder / "secret.txt", folder / "host.sock"
    secret.write_text("host secret\n")
    server = stack.enter_context(socket.socket(socket.AF_UNIX))
    server.bind(str(sock))
    server.listen()
    return [secret, sock]


def bwrap_check(executable: str, network: bool) -> tuple[bool, str, tuple[str, ...]]:
    """`run_bwrap_check` on the program `executable` names on PATH now, cached per
    program: a check remembered for one PATH never answers for another."""
    found = shutil.which(executable)
    if found is None:
        return False, f"{executable} not found on PATH (Debian/Ubuntu package: bubblewrap)", ()
    return run_bwrap_check(found, network)


@functools.cache
def run_bwrap_check(executable: str, network: bool) -> tuple[bool, str, tuple[str, ...]]:
    """Tiny commands in a temporary worktree under /tmp: a write inside must land on the
    host, a write beside it must not; a file and a listening Unix socket planted beside
    it and under $HOME (when $HOME is writable) must be unreadable and unreachable; and,
    without `network`, a connection to a listener on the host's 127.0.0.1 must fail.
    Whether it passed, one line of reason, and what it proved.
    """
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ratchet-bwrap-")))
        work, outside = base / "work", base / "outside.txt"
        work.mkdir()
        outside.write_text("host\n")
        planted = {"/tmp": _plant(base, stack)}
        home = Path.home()
        with contextlib.suppress(OSError):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=home)))
            planted["$HOME"] = _plant(folder, stack)
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        script = CHECK_SCRIPT.format(
            outside=shlex.quote(str(outside)),
            python=shlex.quote(sys.executable),
            probe=shlex.quote(CHECK_PROBE),
            port=listener.getsockname()[1],
            paths=shlex.join(str(p) for paths in planted.values() for p in paths),
        )
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home)}
        sandbox = BwrapSandbox([], network, executable=executable)
        result = sandbox.run(script, work, env, budget=CHECK_BUDGET, grace=1.0)
        lines = [line for line in result.output.splitlines() if line.strip()]
        if result.timed_out:
            return False, f"bwrap self-check did not finish in {CHECK_BUDGET:.0f} s", ()
        if not (work / "inside.txt").is_file():
            first = lines[0] if lines else f"exit status {result.returncode}"
            return False, f"bwrap cannot start a sandbox here: {first[:200]}", ()
        if outside.read_text() != "host\n":
            return False, "a write outside the worktree reached the host", ()
        for kind, wrong in [("file", "read"), ("unix", "reached")]:
            leaks = [line.split(" ", 1)[1] for line in lines if line.startswith(f"{kind}:{wrong} ")]
            if leaks:
                what = (
                    "a file on the host was readable"
                    if kind == "file"
                    else ("a Unix socket listening on the host was reachable")
                )
                return False, f"{what} inside: {leaks[0]}", ()
        checked = sum(line.startswith(("file:", "unix:")) for line in lines)
        if checked != sum(len(paths) for paths in planted.values()):
            return False, f"the host-path checks did not run: {' | '.join(lines)[:200]}", ()
        if not network and "net:connected" in lines:
            return False, "a connection to a listener on the host's 127.0.0.1 succeeded", ()
        if not network and not any(line.startswith("net:refused") for line in lines):
            return False, f"the network check did not run: {' | '.join(lines)[:200]}", ()
    where = " and ".join(planted)
    proved = (
        "writes outside the worktree stay out of the host",
        f"files under {where} unreadable",
        f"Unix sockets listening under {where} unreachable",
        "the host's 127.0.0.1 unreachable" if not network else "network shared (network = true)",
    )
    return True, "self-check passed", proved


def bwrap_self_check(executable: str, network: bool) -> tuple[bool, str]:
    """Whether bwrap works here with these settings, and why not; cached per process."""
    ok, why, _ = bwrap_check(executable, network)
    return ok, why
