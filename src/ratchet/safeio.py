"""Files inside a tree that others control, read and written without following a link.

A worktree holds what the user committed and what proposals and candidates wrote:
any of it may be a symbolic link to a host file (a key under `~/.ssh`, the journal,
the user's `.git/config`), a FIFO that blocks a reader forever, or a file too big to
hold in memory. Every path here is relative to a root ratchet chose; each folder on the
way is opened with `O_NOFOLLOW` relative to the one before it (so a link swapped in
between a check and an open is not followed either), the file itself must be a regular
file, and reads stop at a cap. Writes go to a new file in the same folder, renamed over
the old one: a link there is replaced, never written through.

`ProposerTree` adds the rules of what a proposer's tools may touch: no `.git`, no git
configuration files, no hidden path the scope does not name, nothing protected, nothing
git ignores.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pygit2
from wcmatch import glob

from ratchet.spec import SpecError
from ratchet.specmodel import GLOB_FLAGS, ScopeSpec, matches

GIT_FILES = frozenset({".gitattributes", ".gitmodules"})  # they change how git reads the tree
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LITERAL_DOTS = GLOB_FLAGS & ~glob.DOTGLOB  # a hidden path is named only by a literal dot


class Refused(Exception):
    """A path ratchet will not read or write; the message says which and why."""


def split_relative(path: str) -> list[str]:
    """The components of a root-relative POSIX path; absolute and `..` paths are refused."""
    if not path or "\x00" in path:
        raise Refused(f"{path!r} is not a path")
    if path.startswith("/"):
        raise Refused(f"{path} is an absolute path; give one relative to the project")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        raise Refused(f"{path!r} names no file")
    if ".." in parts:
        raise Refused(f"{path} leads out of the project through '..'")
    return parts


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link, which ratchet does not follow"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file (a FIFO, socket or device)"


@contextlib.contextmanager
def _folder(root: Path, parts: list[str], create: bool = False) -> Iterator[int]:
    """A descriptor of the folder holding `parts[-1]`, reached without following links."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(parts[:-1]):
            try:
                inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, 0o777, dir_fd=fd)
                inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                raise Refused(f"{'/'.join(parts[: depth + 1])} is {_kind(mode)}") from None
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _regular(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise Refused(f"{path} is {_kind(mode)}")


def read_head(root: Path, path: str, limit: int) -> tuple[bytes, bool]:
    """The first `limit` bytes of the regular file `path` under `root`, and whether it
    holds more. A missing file raises `FileNotFoundError`; a link or anything but a
    regular file on the way raises `Refused`."""
    parts = split_relative(path)
    with _folder(root, parts) as folder:
        _regular(path, os.stat(parts[-1], dir_fd=folder, follow_symlinks=False).st_mode)
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=folder)
        except OSError as error:
            if error.errno == errno.ELOOP:  # swapped for a link after the check
                raise Refused(f"{path} is {_kind(stat.S_IFLNK)}") from None
            raise
    try:
        _regular(path, os.fstat(fd).st_mode)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def read_capped(root: Path, path: str, limit: int) -> bytes:
    """The whole regular file `path` under `root`; one over `limit` bytes is refused."""
    data, more = read_head(root, path, limit)
    if more:
        raise Refused(f"{path} is larger than {_size(limit)}, the most ratchet reads of it")
    return data


def write_file(root: Path, path: str, data: bytes) -> None:
    """Replace (or create) the regular file `path` under `root` with `data`.

    No folder on the way may be a link, nor the file itself; missing folders are made.
    An existing file keeps its permission bits.
    """
    parts = split_relative(path)
    name = parts[-1]
    with _folder(root, parts, create=True) as folder:
        try:
            mode: int | None = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None:
            _regular(path, mode)
        temp = f".{name[:64]}.ratchet-{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o666, dir_fd=folder)
        try:
            try:
                if mode is not None:
                    os.fchmod(fd, stat.S_IMODE(mode))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=folder)
            raise


def remove_entry(path: Path) -> None:
    """Remove whatever is at `path` (a file, a link, a folder), following no link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)  # it does not descend into links
    else:
        path.unlink(missing_ok=True)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


class ProposerTree:
    """A worktree as a proposer's tools see it: what they may read, list and edit."""

    def __init__(self, root: Path, scope: ScopeSpec, tracked: list[str]) -> None:
        self.root, self.scope = root, scope
        self.tracked = set(tracked)
        self._repo: pygit2.Repository | None = None

    def check(self, path: str, writing: bool = False) -> str:
        """`path`, normalized, if the rules let a proposer read it (or write it)."""
        parts = split_relative(path)
        clean = "/".join(parts)
        if ".git" in parts:
            raise Refused(f"{clean} is inside a .git folder, which proposers never touch")
        if parts[-1] in GIT_FILES:
            raise Refused(f"{clean} is git's own configuration, which proposers never touch")
        named = self.scope.editable + self.scope.context
        hidden = any(part.startswith(".") for part in parts)
        if hidden and not glob.globmatch(clean, named, flags=_LITERAL_DOTS):
            raise Refused(f"{clean} is a hidden path that the scope does not name")
        protected = matches(clean, self.scope.protected)
        if protected and (writing or not matches(clean, self.scope.context)):
            raise Refused(f"{clean} is protected")
        if writing and clean not in self.tracked and self._ignored(clean):
            raise Refused(f"{clean} is ignored by git, so a change to it would be lost")
        return clean

    def _ignored(self, path: str) -> bool:
        if self._repo is None:
            self._repo = pygit2.Repository(str(self.root))
        try:
            return bool(self._repo.path_is_ignored(path))
        except pygit2.GitError:
            return True  # when git cannot say, the path is not one to write

    def kind(self, path: str) -> str | None:
        """None for a regular file reached without links, else what it is instead."""
        try:
            parts = split_relative(path)
            with _folder(self.root, parts) as folder:
                mode = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False).st_mode
        except Refused as why:
            return str(why)
        except FileNotFoundError:
            return f"{path} does not exist"
        return None if stat.S_ISREG(mode) else f"{path} is {_kind(mode)}"

    def read_text(self, path: str, limit: int) -> str:
        """Up to `limit` bytes of a file the rules let a proposer read, as text."""
        clean = self.check(path)
        try:
            data, more = read_head(self.root, clean, limit)
        except FileNotFoundError:
            raise Refused(f"{clean} does not exist") from None
        text = data.decode(errors="replace")
        return text + f"\n[... cut at {_size(limit)}]" if more else text

    def read_whole(self, path: str, limit: int) -> str | None:
        """A file a proposer may edit, whole and strictly UTF-8; None if it does not exist."""
        clean = self.check(path, writing=True)
        try:
            data = read_capped(self.root, clean, limit)
        except FileNotFoundError:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise Refused(f"{clean} is not UTF-8 text") from None

    def write_text(self, path: str, text: str) -> str:
        clean = self.check(path, writing=True)
        write_file(self.root, clean, text.encode())
        return clean


MAX_DIRECTIVE_BYTES = 1 << 20


def read_directive(project: Path, path: str) -> str:
    """The text of `[scope] directive`: a regular file of the project, not a link."""
    try:
        data = read_capped(project, path, MAX_DIRECTIVE_BYTES)
    except Refused as why:
        raise SpecError(f"[scope] directive: {why}") from None
    except FileNotFoundError:
        raise SpecError(f"[scope] directive: file '{path}' does not exist") from None
    return data.decode(errors="replace")
