"""What the bwrap sandbox's root is built from: the system, and the exact toolchain paths.

The root is an empty tmpfs. Into it go, read-only, `/usr` and the host's merged-usr
links (`/bin -> usr/bin`, ...), `/sys`, a short list of `/etc` files that programs need
to start, resolve names and check certificates (not `/etc` itself: not `shadow`,
`ssl/private`, `npmrc`, `pip.conf`, `gitconfig`, which can hold secrets), and what runs
the command: each PATH entry exactly (never its parent), the prefix of each interpreter
found there (a venv's, with its `pyvenv.cfg`, and the one its `home` names), the parts of
a toolchain manager that its shims need (pyenv, rustup), this Python's prefixes and user
site-packages, and each PYTHONPATH entry. Nothing else of the host is visible:
`$HOME`, `/tmp`, `/var/tmp`, `/run` are private empty tmpfs's, and a Unix socket found
at the top of a shown folder is covered by `/dev/null`.
"""

from __future__ import annotations

import contextlib
import os
import site
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "resolv.conf",
    "gai.conf",
    "services",
    "protocols",
    "networks",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust/extracted",
    "alternatives",
    "localtime",
    "timezone",
    "os-release",
    "debian_version",
    "lsb-release",
    "mtab",
    "mime.types",
    "magic",
    "locale.alias",
    "locale.conf",
    "terminfo",
    "fonts",
    "python3",
    f"python{sys.version_info.major}.{sys.version_info.minor}",
    "OpenCL",
    "vulkan",
    "nvidia",
    "glvnd",
)
PRIVATE = ("/tmp", "/var/tmp", "/run")
# a folder holding one of these is an installation prefix: bind it whole, since its
# `bin` needs its `lib` (a venv, a conda environment)
PREFIX_MARKERS = ("pyvenv.cfg", "conda-meta")
PYENV_PARTS = ("bin", "libexec", "plugins", "pyenv.d", "shims", "versions", "version")
RUSTUP_PARTS = ("toolchains", "settings.toml", "update-hashes")
MAX_SCANNED = 2000  # executables looked at per PATH entry for links and shebangs


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or below it, by name (no link is followed)."""
    here, top = str(path), str(folder)
    return here == top or here.startswith(top.rstrip("/") + "/")


def system_root(hosts: Path | None = None) -> list[str]:
    """bwrap options for the empty root and the read-only system parts in it; `hosts`,
    if given, is shown as `/etc/hosts` instead of the host's."""
    args = ["--tmpfs", "/", "--ro-bind", "/usr", "/usr"]
    for name in MERGED_USR:
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    if Path("/sys").is_dir():
        args += ["--ro-bind", "/sys", "/sys"]
    for name in ETC_FILES:
        path = Path("/etc", name)
        if name == "hosts" and hosts is not None:
            args += ["--ro-bind", str(hosts), str(path)]
        elif path.is_symlink():
            target = path.resolve()
            shown = inside(target, Path("/usr")) or str(target).startswith("/proc/")
            if shown:  # keep the link, so a reader of its target (a timezone name) sees it
                args += ["--symlink", os.readlink(path), str(path)]
            elif target.exists():
                args += ["--ro-bind", str(target), str(path)]
        elif path.exists():
            args += ["--ro-bind", str(path), str(path)]
    return args


def system_visible(path: Path) -> bool:
    """Whether the system part of the root already shows `path` (resolved)."""
    return inside(path, Path("/usr")) or path == Path("/")


def _broad(path: Path, homes: Iterable[Path]) -> bool:
    """A folder too wide to show for a toolchain: the root, or one holding (or being) a
    home or a private folder: binding it would show what the tmpfs's hide."""
    return path == Path("/") or any(inside(p, path) for p in [*homes, *map(Path, PRIVATE)])


def prefix_of(executable: Path, homes: Iterable[Path]) -> Path:
    """The folder to show so that `executable` runs: its installation prefix when it
    has one (`P/bin/python` with `P/pyvenv.cfg` or `P/lib/python*`), else its folder."""
    folder = executable.parent
    if folder.name == "bin":
        prefix = folder.parent
        marked = any((prefix / m).exists() for m in PREFIX_MARKERS)
        python = any(prefix.glob("lib/python[0-9]*")) and executable.name.startswith("python")
        node = (prefix / "lib" / "node_modules").is_dir() and executable.name == "node"
        if (marked or python or node) and not _broad(prefix, list(homes)):
            return prefix
    return folder


def _venv_home(prefix: Path, homes: list[Path]) -> list[Path]:
    """The base interpreter's prefix a venv's `pyvenv.cfg` names (`home = P/bin`)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (prefix / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip().startswith("/"):
                home = Path(value.strip())
                base = home.parent if home.name == "bin" else home
                return [] if _broad(base, homes) else [base]
    return []


def _manager_root(entry: Path, marker: str, stop: Iterable[Path]) -> Path | None:
    """The nearest folder above `entry` (itself included) holding `marker`."""
    stops = set(stop)
    for folder in [entry, *entry.parents]:
        if folder in stops or len(folder.parts) <= 1:
            return None
        if (folder / marker).is_file():
            return folder
    return None


def _shebang(path: Path) -> Path | None:
    with contextlib.suppress(OSError):
        with path.open("rb") as file:
            head = file.read(256)
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].split()
            if words and words[0].startswith(b"/"):
                return Path(os.fsdecode(words[0]))
    return None


def _entry_paths(entry: Path, env: Mapping[str, str], homes: list[Path]) -> tuple[list[Path], bool]:
    """What one PATH entry needs shown: itself, plus its prefix's or its toolchain
    manager's parts; and whether a manager (pyenv, rustup) owns the entry, whose parts
    then cover what its shims and proxies run."""
    found = [entry]
    managed = False
    if (entry.parent / "pyvenv.cfg").is_file() or (entry.parent / "conda-meta").is_dir():
        found.append(entry.parent)
    if entry.name == ".bin" and entry.parent.name == "node_modules":
        found.append(entry.parent)
    if entry.name == "bin" and (entry / "node").is_file() and (entry.parent / "lib").is_dir():
        found.append(entry.parent)  # nvm and friends: node beside its lib/node_modules
    pyenv = env.get("PYENV_ROOT")
    pyenv_root = Path(pyenv) if pyenv else _manager_root(entry, "libexec/pyenv", homes)
    if pyenv_root is not None and inside(entry, pyenv_root):
        found += [pyenv_root / part for part in PYENV_PARTS]
        managed = True
    if (entry / "rustup").exists():
        home = env.get("HOME") or str(Path.home())
        rustup = Path(env.get("RUSTUP_HOME") or Path(home, ".rustup"))
        found += [rustup / part for part in RUSTUP_PARTS]
        managed = True
    return found, managed


_ENV_KEYS = ("PATH", "PYTHONPATH", "HOME", "PYENV_ROOT", "RUSTUP_HOME")
_FOUND: dict[tuple[object, ...], list[Path]] = {}


def toolchain_paths(env: Mapping[str, str], homes: list[Path]) -> list[Path]:
    """`find_toolchain_paths`, remembered while the environment and every PATH folder
    are unchanged: scanning PATH for links and scripts costs tens of milliseconds, and
    it runs before every sandboxed command. A folder's mtime moves when an entry is
    added, removed or renamed in it, which is how a newly installed tool shows up."""
    entries = [p for p in env.get("PATH", "").split(os.pathsep) if p.startswith("/")]
    stamps = []
    for entry in entries:
        try:
            stamps.append(os.stat(entry).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    key = (*(env.get(k) for k in _ENV_KEYS), tuple(homes), tuple(stamps))
    found = _FOUND.get(key)
    if found is None:  # slots' threads may both compute it: the same answer, no harm
        found = find_toolchain_paths(env, homes)
        _FOUND.clear()  # one environment at a time is the common case: keep memory flat
        _FOUND[key] = found
    return list(found)


def find_toolchain_paths(env: Mapping[str, str], homes: list[Path]) -> list[Path]:
    """Every host path outside the system part that the command needs to start.

    For each PATH entry outside `/usr`: the entry, what `_entry_paths` adds, and for each
    executable in it that is a link or a script, the prefix of its target or of its
    interpreter when that lies elsewhere (a venv's `python` links to its base Python).
    """
    shown: list[Path] = []
    reals: list[Path] = []

    def visible(path: Path) -> bool:  # bwrap binds each shown path as named and resolved
        return system_visible(path) or any(inside(path, p) for p in [*shown, *reals])

    def add(path: Path) -> None:
        real = path.resolve()
        if not path.exists() or visible(path):
            return
        if not _broad(path, homes) and not _broad(real, homes):
            shown.append(path)
            reals.append(real)

    interpreters = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent]
    with contextlib.suppress(AttributeError):
        if site.ENABLE_USER_SITE:
            interpreters.append(Path(site.getusersitepackages()))
    for path in interpreters:
        add(path)
    for prefix in list(shown):
        for base in _venv_home(prefix, homes):
            add(base)
    for name in env.get("PYTHONPATH", "").split(os.pathsep):
        if name.startswith("/"):
            add(Path(name))
    entries = [Path(p) for p in env.get("PATH", "").split(os.pathsep) if p.startswith("/")]
    for entry in dict.fromkeys(entries):
        if not entry.is_dir() or system_visible(entry.resolve()):
            continue
        extra, managed = _entry_paths(entry, env, homes)
        for path in extra:
            add(path)
            for base in _venv_home(path, homes):
                add(base)
        if managed:
            continue
        seen: set[Path] = set()
        with contextlib.suppress(OSError):
            for count, item in enumerate(os.scandir(entry)):
                if count >= MAX_SCANNED:
                    break
                path = Path(item.path).resolve() if item.is_symlink() else Path(item.path)
                interpreter = _shebang(path) if item.is_file() else None
                for needed in (path, interpreter):
                    if needed is None or needed in seen or not needed.exists():
                        continue
                    seen.add(needed)
                    real = needed.resolve()
                    if not visible(real):
                        add(prefix_of(real, homes))
    # a path below another shown one is shown with it (a venv's `bin`, its prefix)
    return [p for p in shown if not any(q != p and inside(p, q) for q in shown)]


def sockets_in(folders: Iterable[Path]) -> list[Path]:
    """Unix sockets at the top of `folders`: binding a folder would make them reachable
    (a read-only mount does not stop `connect`), so each gets `/dev/null` over it."""
    found: list[Path] = []
    for folder in folders:
        with contextlib.suppress(OSError):
            if not folder.is_dir():
                continue
            for item in os.scandir(folder):
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(item.stat(follow_symlinks=False).st_mode):
                        found.append(Path(item.path))
    return found
