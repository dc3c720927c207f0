"""What a proposal may be: the checks on its change, before and after it is staged.

Before staging, the worktree is inspected on the filesystem alone (`lstat`, no file
read): a proposal that adds a symbolic link, a FIFO, a socket, a device or a nested git
repository, touches git's own metadata, or exceeds a `[scope]` cap is refused there, so a
1 GB file or 50,000 new files never reach `index.add_all()` (which hashes whole files)
and a FIFO is never opened. After staging, the change itself is checked against the
editable scope, git's metadata and file modes, and for modules it would shadow.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2
from pygit2.enums import FileMode

from ratchet.integrity import shadowing_paths
from ratchet.specmodel import ScopeSpec, matches

if TYPE_CHECKING:
    from ratchet.workspace import Change

# names git reads as its own configuration: no proposal may add, change or delete one
GIT_METADATA = frozenset({".git", ".gitattributes", ".gitmodules"})


def is_git_metadata(path: str) -> bool:
    """Whether any part of the path is git metadata (also `.GIT`, `.git.`, as some
    filesystems where the branch may be checked out read them the same)."""
    return any(part.lower().rstrip(". ") in GIT_METADATA for part in path.split("/"))


def describe_size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a Unix socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return f"a special file ({stat.filemode(mode)})"


ONLY_REGULAR = "only regular files can be proposed; nothing of it was kept"


def link_why(root: Path, path: str, allowed: list[str]) -> str | None:
    """Why the link at `path` may not be proposed, or None when `allowed` names it and
    its target is relative and lands on an existing, non-hidden path inside `root`."""
    target = os.readlink(root / path)
    what = f"{path}, a symbolic link to {target}"
    if not matches(path, allowed):
        return (
            f"the proposal adds or changes {what}; symbolic links are refused unless "
            "[scope] allow_symlinks names them (and their target stays inside the worktree)"
        )
    if os.path.isabs(target):
        return f"the proposal adds {what}; an allowed link must have a relative target"
    real_root = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(root / path))
    if not resolved.is_relative_to(real_root):
        return f"the proposal adds {what}, which resolves outside the worktree"
    inside = resolved.relative_to(real_root).parts
    if not inside or any(part.startswith(".") for part in inside):
        return f"the proposal adds {what}, which resolves to a hidden or git path"
    if not resolved.exists():
        return f"the proposal adds {what}, which points at nothing"
    return None


@dataclass
class Inspection:
    """What the filesystem shows a proposal touches, and why it is refused (or None)."""

    paths: list[str]
    why: str | None = None


class _Refused(Exception):
    pass


class _Inspector:
    def __init__(self, root: Path, repo: pygit2.Repository, scope: ScopeSpec) -> None:
        self.root, self.repo, self.scope = root, repo, scope
        self.paths: list[str] = []

    def refuse(self, why: str) -> None:
        raise _Refused(why)

    def touch(self, path: str) -> None:
        self.paths.append(path)
        if is_git_metadata(path):
            self.refuse(
                f"the proposal touches {path}, git metadata (.git, .gitattributes, "
                ".gitmodules) that no proposal may add, change or delete, whatever "
                "[scope] editable says; nothing of it was kept"
            )
        if len(self.paths) > self.scope.max_files:
            self.refuse(
                f"the proposal touches more than {self.scope.max_files} files; raise "
                "[scope] max_files if that is meant; nothing of it was kept"
            )

    def check_size(self, path: str, size: int, side: str = "") -> None:
        cap = self.scope.max_file_bytes
        if size > cap:
            self.refuse(
                f"{side}{path} is {describe_size(size)}, over [scope] max_file_bytes "
                f"({describe_size(cap)}); raise it if that is meant; nothing of it was kept"
            )

    def check_entry(self, path: str, mode: int, size: int) -> None:
        """A path the proposal added or changed, as `lstat` shows it now."""
        if stat.S_ISLNK(mode):
            why = link_why(self.root, path, self.scope.allow_symlinks)
            if why:
                self.refuse(f"{why}; nothing of it was kept")
        elif stat.S_ISREG(mode):
            self.check_size(path, size)
        elif not stat.S_ISDIR(mode):
            self.refuse(f"the proposal adds {path}, {_kind(mode)}; {ONLY_REGULAR}")

    def blob_size(self, oid: pygit2.Oid) -> int:
        try:
            return int(self.repo.odb.read_header(oid)[1])
        except (KeyError, ValueError, pygit2.GitError):
            return 0

    def tracked(self, parent: pygit2.Tree) -> None:
        """Changes to tracked (or staged) paths, from git's status; their paths."""
        index = self.repo.index
        changed = self.repo.status(untracked_files="no")
        for path in sorted(changed):
            self.touch(path)
            replaced, staged = _entry_id(parent, path), _entry_id(index, path)
            if replaced is not None:  # a deletion's patch holds the old file whole
                self.check_size(path, self.blob_size(replaced), "the replaced ")
            if staged is not None and staged != replaced:
                self.check_size(path, self.blob_size(staged), "the staged ")
            try:
                info = os.lstat(self.root / path)
            except FileNotFoundError:
                continue  # deleted
            self.check_entry(path, info.st_mode, info.st_size)

    def untracked(self) -> None:
        """Walk the worktree: new files, and anything that is not a regular file."""
        index = self.repo.index
        pending = [""]
        while pending:
            prefix = pending.pop()
            with os.scandir(self.root / prefix) as listing:
                entries = sorted(listing, key=lambda e: e.name)
            for entry in entries:
                if not prefix and entry.name == ".git":
                    continue  # the slot's own link to the repository
                path = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if entry.name.lower().rstrip(". ") == ".git":
                        self.refuse(f"the proposal adds {path}, a nested git repository "
                                    f"(a gitlink); {ONLY_REGULAR}")  # fmt: skip
                    # an ignored folder's untracked files are removed before measuring;
                    # its tracked ones are in git's status
                    if not self.repo.path_is_ignored(path + "/"):
                        pending.append(path + "/")
                    continue
                regular = entry.is_file(follow_symlinks=False) or entry.is_symlink()
                tracked = path in index
                if tracked and regular:
                    continue  # git's status has said whether it changed
                # git metadata counts even where ignored: git itself reads it there
                if not regular or is_git_metadata(path) or not self.repo.path_is_ignored(path):
                    info = entry.stat(follow_symlinks=False)
                    if not tracked:
                        self.touch(path)
                    self.check_entry(path, info.st_mode, info.st_size)


def _entry_id(where: pygit2.Index | pygit2.Tree, path: str) -> pygit2.Oid | None:
    try:
        return where[path].id
    except (KeyError, ValueError):
        return None


def inspect_worktree(
    root: Path, repo: pygit2.Repository, parent: pygit2.Tree, scope: ScopeSpec
) -> Inspection:
    """The proposal as the filesystem shows it, checked without reading a file.

    Tracked paths come from git's status (which hashes a file only when its size is
    unchanged but its time is not, and then in a stream); everything else from a walk
    that never follows a link, never opens a file, and skips ignored folders, which
    are removed before the candidate is measured. It stops at the first refusal.
    """
    inspector = _Inspector(root, repo, scope)
    try:
        inspector.tracked(parent)
        inspector.untracked()
    except _Refused as refusal:
        return Inspection(inspector.paths, str(refusal))
    return Inspection(inspector.paths)


def links_and_special_files(root: Path) -> list[Path]:
    """Every link, FIFO, socket or device under `root` (outside its top `.git`), never
    following a link. git writes a tracked file's content through a link found at its
    path, and its status does not list FIFOs: a reset must remove both first."""
    found: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if folder == root and entry.name == ".git":
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif not entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def scope_why(change: Change, scope: ScopeSpec) -> str | None:
    """Why the staged change is `out-of-scope`, or None: paths outside the editable
    scope, git metadata, links and gitlinks, modules it would shadow."""
    outside = sorted({p for f in change.files for p in f.paths if not matches(p, scope.editable)})
    if outside:
        return (
            f"the proposal changed {', '.join(outside)}, outside the editable scope "
            f"({', '.join(scope.editable)}); nothing of it was kept"
        )
    metadata = sorted({p for f in change.files for p in f.paths if is_git_metadata(p)})
    if metadata:
        return (
            f"the proposal touches {', '.join(metadata)}, git metadata that no proposal may "
            "change, whatever [scope] editable says; nothing of it was kept"
        )
    for f in change.files:
        if f.mode == FileMode.COMMIT:
            return f"the proposal adds {f.path}, a gitlink (a nested repository); {ONLY_REGULAR}"
        if f.mode == FileMode.LINK and not matches(f.path, scope.allow_symlinks):
            return (
                f"the proposal adds or changes {f.path}, a symbolic link; symbolic links are "
                "refused unless [scope] allow_symlinks names them; nothing of it was kept"
            )
    added = [f.path for f in change.files if f.status in {"A", "R", "C"}]
    shadows = shadowing_paths(added, scope.allow_shadowing)
    if shadows:
        return (
            f"the proposal adds {', '.join(shadows)}; allow it in "
            "[scope] allow_shadowing if that is meant"
        )
    return None
