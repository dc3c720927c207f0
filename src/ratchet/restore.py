"""Bringing a measured worktree back to the candidate's tree: what the evaluator sees.

Between a measurement's `command` and its protected `evaluate` step, every file the
command created is removed unless `[metric] outputs` declares it (and it is a plain
file that no Python could import), and every file of the candidate that the command
changed, replaced or removed is written back from a clean source (git's objects, or a
Ray worker's unpacked tree). After the measurement, the tree is brought back once more,
outputs included, so that every measurement starts from the candidate's tree.

Finding what changed costs one walk of `lstat`s, no reads: a write moves a file's
ctime, which no unprivileged program can set back. Every path is opened relative to a
folder descriptor with `O_NOFOLLOW`, so a link the command planted is removed, never
followed, even if a process it left behind swaps one in while this runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import pygit2
from wcmatch import glob

from ratchet.integrity import expand_patterns
from ratchet.specmodel import GLOB_FLAGS, matches

_LINK_MODE, _EXEC_MODE, _FILE_MODE, _TREE_MODE = 0o120000, 0o100755, 0o100644, 0o040000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# outputs that Python could import or run at start-up are never handed to the evaluator
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".pyw", ".so", ".pth", ".dylib")
MAX_NAMED = 10  # a note names this many paths, then counts the rest
GIT_FILE_CAP = 4096  # a worktree's `.git` file is one line


class Entry(NamedTuple):
    """One path's `lstat`, enough to tell that it changed (a tuple: cheap to make)."""

    mode: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @property
    def kind(self) -> str:
        """ "dir", "file", "link" or "other"."""
        if stat.S_ISDIR(self.mode):
            return "dir"
        if stat.S_ISREG(self.mode):
            return "file"
        return "link" if stat.S_ISLNK(self.mode) else "other"


@dataclass(frozen=True)
class Snapshot:
    """Root-relative POSIX path -> Entry for everything under a worktree but its `.git`."""

    entries: dict[str, Entry]
    git_kind: str | None = None  # the top `.git`: "file" (a worktree's pointer), "dir" or None
    git_file: bytes = b""  # the pointer's content: a changed one would send git elsewhere


class Pristine(Protocol):
    """Where the candidate's own files are read back from."""

    def read(self, path: str) -> tuple[int, bytes] | None:
        """Git's file mode and the bytes (a link's target) of `path`; None if absent."""
        ...

    def has(self, path: str) -> bool:
        """Whether `path` (a file, link or folder) belongs to the candidate's tree."""
        ...


class GitPristine:
    """The candidate's files from a git tree: the slot's, or a shared repository's."""

    def __init__(self, repo: pygit2.Repository, tree: str) -> None:
        self.repo = repo
        self.tree = repo[pygit2.Oid(hex=tree)].peel(pygit2.Tree)
        self._paths: frozenset[str] | None = None

    def _entry(self, path: str) -> pygit2.Object | None:
        try:
            return self.tree[path]
        except KeyError:
            return None

    def has(self, path: str) -> bool:
        if self._paths is None:
            self._paths = _tree_paths(self.repo, self.tree)
        return path in self._paths

    def read(self, path: str) -> tuple[int, bytes] | None:
        entry = self._entry(path)
        if entry is None or entry.filemode not in (_FILE_MODE, _EXEC_MODE, 0o100664, _LINK_MODE):
            return None
        return entry.filemode, self.repo[entry.id].peel(pygit2.Blob).data

    @staticmethod
    def of_worktree(worktree: Path) -> GitPristine | None:
        """The tree in the index of the git worktree at `worktree`, if it is one."""
        try:
            repo = pygit2.Repository(str(worktree), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
            if repo.workdir is None or Path(repo.workdir).resolve() != worktree.resolve():
                return None
            return GitPristine(repo, str(repo.index.write_tree()))
        except (pygit2.GitError, KeyError, OSError):
            return None


_PATHS: dict[str, frozenset[str]] = {}  # tree id -> its paths; a tree id never changes
_PATHS_KEPT = 16  # the trees a run measures over and over: candidates and incumbents
_PATHS_LOCK = threading.Lock()  # slots measure in threads


def _tree_paths(repo: pygit2.Repository, tree: pygit2.Tree) -> frozenset[str]:
    """Every file, link and folder of `tree` (one walk, then remembered by its id):
    looking paths up one by one costs milliseconds each in pygit2."""
    key = str(tree.id)
    if key not in _PATHS:
        found: set[str] = set()
        pending = [(tree, "")]
        while pending:
            folder, prefix = pending.pop()
            for entry in folder:
                path = prefix + str(entry.name)
                found.add(path)
                if entry.filemode == _TREE_MODE:
                    pending.append((repo[entry.id].peel(pygit2.Tree), path + "/"))
        with _PATHS_LOCK:
            while len(_PATHS) >= _PATHS_KEPT:
                _PATHS.pop(next(iter(_PATHS)))
            _PATHS[key] = frozenset(found)
        return frozenset(found)
    return _PATHS[key]


class FolderPristine:
    """The candidate's files from folders that hold a clean copy (the first that has a
    path wins): a Ray worker's files its patch wrote, then its cached base tree."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders

    def has(self, path: str) -> bool:
        return True  # the tree was built fresh for this measurement: its snapshot is the tree

    def read(self, path: str) -> tuple[int, bytes] | None:
        for folder in self.folders:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                return _read_entry(folder, path)
        return None


def _read_entry(folder: Path, path: str) -> tuple[int, bytes] | None:
    with open_parent(folder, path) as (fd, name):
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            return _LINK_MODE, os.fsencode(os.readlink(name, dir_fd=fd))
        if not stat.S_ISREG(info.st_mode):
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks
        handle = os.open(name, flags, dir_fd=fd)
        with os.fdopen(handle, "rb") as reader:
            if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                return None  # swapped since the stat
            data = reader.read()
        return (_EXEC_MODE if info.st_mode & 0o111 else _FILE_MODE), data


@contextlib.contextmanager
def open_parent(root: Path, path: str) -> Iterator[tuple[int, str]]:
    """A descriptor of `path`'s folder, reached without following any link, and its name."""
    *folders, name = path.split("/")
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in folders:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd, name
    finally:
        os.close(fd)


def whole_folders(protected: Sequence[str]) -> frozenset[str]:
    """The folders that `protected` covers whole, by a plain name or `name/**`.

    A snapshot need not look inside them: the judge digests every file there before and
    after each measurement, so anything added or changed there is `tampered` anyway.
    """
    found = set()
    for pattern in protected:
        name = pattern.removesuffix("/**").rstrip("/")
        if name and not glob.is_magic(name, flags=GLOB_FLAGS):
            found.add(name)
    return frozenset(found)


def take_snapshot(root: Path, skip: frozenset[str] = frozenset()) -> Snapshot:
    """Every path under `root` (links not followed, `.git` at the top left out); the
    folders in `skip` are listed, not what they hold."""
    entries: dict[str, Entry] = {}
    pending: list[tuple[int, str]] = [(os.open(root, _DIR_FLAGS), "")]
    while pending:
        fd, prefix = pending.pop()
        try:
            with os.scandir(fd) as listing:
                for item in listing:
                    if not prefix and item.name == ".git" and _is_git(item):
                        continue
                    rel = prefix + item.name
                    try:
                        info = item.stat(follow_symlinks=False)
                        entry = Entry(info.st_mode, info.st_ino, info.st_size,
                                      info.st_mtime_ns, info.st_ctime_ns)  # fmt: skip
                    except OSError:
                        continue  # gone since the listing
                    entries[rel] = entry
                    if entry.kind == "dir" and rel not in skip:
                        with contextlib.suppress(OSError):
                            pending.append((os.open(item.name, _DIR_FLAGS, dir_fd=fd), rel + "/"))
        except OSError:
            pass  # an unreadable folder: the caller sees its files as missing
        finally:
            os.close(fd)
    return Snapshot(entries, *_git_entry(root))


def _is_git(item: os.DirEntry[str]) -> bool:
    return item.is_dir(follow_symlinks=False) or item.is_file(follow_symlinks=False)


def _git_entry(root: Path) -> tuple[str | None, bytes]:
    """The top `.git`'s kind and, for a worktree's pointer file, its content."""
    try:
        handle = os.open(root / ".git", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None, b""  # absent, or a link: then it is an ordinary entry of the walk
    try:
        mode = os.fstat(handle).st_mode
        if stat.S_ISDIR(mode):
            return "dir", b""
        if not stat.S_ISREG(mode):
            return None, b""
        return "file", os.read(handle, GIT_FILE_CAP)
    finally:
        os.close(handle)


def is_code(path: str) -> bool:
    """Whether Python could import, load or run `path` (a module, bytecode, a `.pth`)."""
    return path.endswith(CODE_SUFFIXES) or "__pycache__" in path.split("/")


@dataclass
class Settled:
    """What bringing the tree back did, for the measurement's output and its integrity."""

    removed: list[str] = field(default_factory=list)  # created by the command, not outputs
    restored: list[str] = field(default_factory=list)  # the candidate's, changed at run time
    refused: list[str] = field(default_factory=list)  # declared outputs not handed over, why
    outputs: list[str] = field(default_factory=list)  # declared outputs handed over
    lost: list[str] = field(default_factory=list)  # changed, and with no clean copy to restore
    tampered: list[str] = field(default_factory=list)  # protected files among `restored`

    def notes(self, when: str) -> str:
        """Lines for the measurement's output; empty when nothing was done."""
        lines = []
        for what, paths in (
            ("removed (not declared in [metric] outputs)", self.removed),
            ("restored to the candidate's content", self.restored),
            ("not handed over", self.refused),
            ("changed and could not be restored", self.lost),
        ):
            if paths:
                lines.append(f"[ratchet] {when}: {what}: {name_paths(paths)}")
        return "\n".join(lines)


def name_paths(paths: list[str]) -> str:
    shown = [p if p.isprintable() else ascii(p) for p in sorted(paths)[:MAX_NAMED]]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def settle(
    root: Path,
    before: Snapshot,
    pristine: Pristine | None,
    outputs: Sequence[str] = (),
    protected: Sequence[str] = (),
) -> Settled:
    """Make the tree under `root` what `before` recorded, but for the declared `outputs`."""
    done = Settled()
    now = take_snapshot(root, whole_folders(protected))
    output_globs = expand_patterns(list(outputs)) if outputs else []
    protected_globs = expand_patterns(list(protected)) if protected else []
    if before.git_kind is None and now.git_kind is not None:
        _remove(root, ".git", missing_ok=True)
        done.removed.append(".git")
    elif before.git_kind == "file" and (now.git_kind, now.git_file) != ("file", before.git_file):
        _remove(root, ".git", missing_ok=True)
        _write(root, ".git", _FILE_MODE, before.git_file)
        done.restored.append(".git")

    handed: set[str] = set()
    for path in sorted(now.entries.keys() - before.entries.keys()):
        if not output_globs or not matches(path, output_globs):
            continue
        kind = now.entries[path].kind
        if kind == "dir":
            continue
        if kind != "file":
            done.refused.append(f"{path} (a {'link' if kind == 'link' else 'special file'})")
        elif is_code(path):
            done.refused.append(f"{path} (code the evaluator could import)")
        else:
            handed.add(path)
    done.outputs = sorted(handed)
    keep_dirs = {"/".join(p.split("/")[:i]) for p in handed for i in range(1, p.count("/") + 1)}

    removed_dirs: set[str] = set()
    for path in sorted(now.entries.keys() - before.entries.keys()):
        if path in handed or path in keep_dirs or _under(path, removed_dirs):
            continue  # handed over, or inside a folder removed whole
        _remove(root, path)
        done.removed.append(path)
        if now.entries[path].kind == "dir":
            removed_dirs.add(path)

    for path in sorted(before.entries):
        was, found = before.entries[path], now.entries.get(path)
        if found == was:
            continue
        if was.kind == "dir":
            if found is None or found.kind != "dir":
                _remove(root, path, missing_ok=True)
                with open_parent(root, path) as (fd, name):
                    os.mkdir(name, stat.S_IMODE(was.mode), dir_fd=fd)
                done.restored.append(path)
            elif stat.S_IMODE(found.mode) != stat.S_IMODE(was.mode):
                with open_parent(root, path) as (fd, name):
                    os.chmod(name, stat.S_IMODE(was.mode), dir_fd=fd, follow_symlinks=False)
            continue
        if found is not None and found.kind == "file" and path in handed:
            continue
        if found is not None and found.kind == "file" and output_globs and matches(
            path, output_globs) and not is_code(path):  # fmt: skip
            done.outputs.append(path)  # a tracked file the command rewrote, as declared
            continue
        clean = pristine.read(path) if pristine is not None else None
        if clean is None:
            done.lost.append(path)
            continue
        if found is not None and _same(root, path, found, clean):
            continue  # touched, not changed
        _remove(root, path, missing_ok=True)
        _write(root, path, *clean)
        done.restored.append(path)
        if protected_globs and matches(path, protected_globs):
            done.tampered.append(f"{path} changed")
    return done


def prune(root: Path, snapshot: Snapshot, pristine: Pristine) -> Snapshot:
    """Remove what is on disk but not in the candidate's tree; the snapshot without it."""
    gone: set[str] = set()
    for path in sorted(snapshot.entries):
        if _under(path, gone) or pristine.has(path):
            continue
        _remove(root, path, missing_ok=True)
        gone.add(path)
    if not gone:
        return snapshot
    kept = {p: e for p, e in snapshot.entries.items() if p not in gone and not _under(p, gone)}
    return Snapshot(kept, snapshot.git_kind, snapshot.git_file)


def _under(path: str, folders: set[str]) -> bool:
    """Whether a folder above `path` is one of `folders`."""
    if not folders:
        return False
    parts = path.split("/")
    return any("/".join(parts[:i]) in folders for i in range(1, len(parts)))


def _same(root: Path, path: str, found: Entry, clean: tuple[int, bytes]) -> bool:
    mode, data = clean
    if mode == _LINK_MODE:
        if found.kind != "link":
            return False
        with open_parent(root, path) as (fd, name):
            return os.fsencode(os.readlink(name, dir_fd=fd)) == data
    executable = bool(found.mode & 0o100)
    if found.kind != "file" or executable != (mode == _EXEC_MODE):
        return False
    if found.size != len(data):
        return False
    try:
        current = _read_entry(root, path)
    except OSError:
        return False
    return current is not None and current[1] == data


def _remove(root: Path, path: str, missing_ok: bool = False) -> None:
    try:
        with open_parent(root, path) as (fd, name):
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=fd)  # fd-based: never follows a link inside
            else:
                os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _write(root: Path, path: str, mode: int, data: bytes) -> None:
    """Write a file (or link) anew beside `path` and rename it over whatever is there."""
    with open_parent(root, path) as (fd, name):
        temporary = f".{name}.ratchet-restore"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=fd)
        if mode == _LINK_MODE:
            os.symlink(os.fsdecode(data), temporary, dir_fd=fd)
        else:
            perms = 0o755 if mode == _EXEC_MODE else 0o644
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            handle = os.open(temporary, flags, perms, dir_fd=fd)
            with os.fdopen(handle, "wb") as writer:
                writer.write(data)
                os.fchmod(writer.fileno(), perms)  # whatever the umask
        os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
