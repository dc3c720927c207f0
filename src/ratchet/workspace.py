"""Git: the run branch, persistent slot worktrees, proposals as patches, keeps as commits.

The user's checked-out branch, index and working tree are never written: slots are
detached worktrees under `.ratchet/slots/`, keeps are made with `write-tree` and
`commit-tree` (no hooks run), and only `refs/heads/ratchet/<run>` moves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import CheckoutStrategy, DiffOption, FileStatus, ResetMode

from ratchet.plaintext import visible
from ratchet.regions import region_violation
from ratchet.scope import describe_size, inspect_worktree, links_and_special_files
from ratchet.specmodel import ScopeSpec, matches

STATE_DIR = ".ratchet"
SLOTS_DIR = f"{STATE_DIR}/slots"
BRANCH_PREFIX = "ratchet/"
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "ratchet",
    "GIT_AUTHOR_EMAIL": "ratchet@localhost",
    "GIT_COMMITTER_NAME": "ratchet",
    "GIT_COMMITTER_EMAIL": "ratchet@localhost",
}
# git must not read the user's pager, editor or terminal prompts while ratchet drives it
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}


class GitError(Exception):
    """A git command failed; the message holds git's own words."""


def git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", "-c", "core.quotepath=on", *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, **_GIT_ENV, **(env or {})},
    )
    if check and proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed: {message[-1] if message else proc.returncode}")
    return proc.stdout.decode(errors="surrogateescape")


def branch_name(run: str) -> str:
    return f"{BRANCH_PREFIX}{run}"


def project_root(path: Path) -> Path:
    try:
        return Path(git(path, "rev-parse", "--show-toplevel").strip())
    except (GitError, FileNotFoundError, NotADirectoryError):
        raise GitError(f"{path} is not inside a git repository; run 'git init' first") from None


def head_commit(project: Path) -> str:
    try:
        return git(project, "rev-parse", "--verify", "HEAD^{commit}").strip()
    except GitError:
        raise GitError("the repository has no commit yet; commit your files first") from None


def resolve(project: Path, ref: str) -> str | None:
    out = git(project, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False).strip()
    return out or None


def dirty_files(project: Path, leftovers: list[str] | None = None) -> list[str]:
    """Modified, staged or untracked files, outside ratchet's own state. Untracked files
    matching `leftovers` (`[scope] outputs`, the results file) do not count; ignored
    files never do."""
    out = git(project, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    entries = [entry for entry in out.split("\0") if len(entry) > 3]
    return sorted(
        entry[3:]
        for entry in entries
        if not entry[3:].startswith(f"{STATE_DIR}/")
        and not (entry.startswith("??") and leftovers and matches(entry[3:], leftovers))
    )


def tracked_files(project: Path, commit: str = "HEAD") -> list[str]:
    out = git(project, "ls-tree", "-r", "-z", "--name-only", "--full-tree", commit)
    return [name for name in out.split("\0") if name]


def create_branch(project: Path, run: str, commit: str) -> None:
    """Create `ratchet/<run>` at `commit`; fails if it already exists."""
    git(project, "update-ref", f"refs/heads/{branch_name(run)}", commit, "")


def advance_branch(project: Path, run: str, new: str, old: str) -> None:
    """Move `ratchet/<run>` from `old` to `new`, refusing if someone else moved it."""
    git(project, "update-ref", f"refs/heads/{branch_name(run)}", new, old)


def stale_git_locks(project: Path, run: str) -> list[Path]:
    """Lock files a killed git (or libgit2) of ratchet's could have left: the run branch's
    ref lock, and those of the slot worktrees. Only call this while holding the run lock,
    which proves that no ratchet run, and so none of its git children, is alive."""
    common = Path(git(project, "rev-parse", "--path-format=absolute", "--git-common-dir").strip())
    found = [common / "refs" / "heads" / f"{branch_name(run)}.lock"]
    slots = (project / SLOTS_DIR).resolve()
    worktrees = common / "worktrees"
    for entry in sorted(worktrees.iterdir()) if worktrees.is_dir() else []:
        try:
            target = Path((entry / "gitdir").read_text().strip()).resolve().parent
        except OSError:
            continue
        if target.parent != slots:
            continue  # the user's own worktrees are theirs
        found.extend(sorted(entry.glob("*.lock")))
        # `git worktree add` marks a worktree it is still creating with this word
        locked = entry / "locked"
        if locked.is_file() and locked.read_text().strip() == "initializing":
            found.append(locked)
    return [path for path in found if path.is_file()]


@dataclass(frozen=True)
class Slot:
    index: int
    path: Path
    repo: pygit2.Repository  # held open: the per-experiment git work runs in-process


def ensure_slot(project: Path, index: int, commit: str, rebuild: bool = False) -> Slot:
    """The slot's persistent worktree, created once and rebuilt when broken."""
    path = project / SLOTS_DIR / str(index)
    healthy = (path / ".git").is_file() and git(path, "rev-parse", "--git-dir", check=False)
    if rebuild or not healthy:
        if path.exists():
            shutil.rmtree(path)
        git(project, "worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        git(project, "worktree", "add", "--detach", "-f", str(path), commit)
    return Slot(index, path, pygit2.Repository(str(path)))


_UNTRACKED = FileStatus.WT_NEW | FileStatus.IGNORED


def _remove_untracked(slot: Slot, only_ignored: bool) -> None:
    """`git clean -ffdx` (or `-ffdX`), in-process: files git does not track are deleted."""
    wanted = FileStatus.IGNORED if only_ignored else _UNTRACKED
    status = slot.repo.status(untracked_files="all", ignored=True)
    for name, flags in status.items():
        if flags & wanted and not flags & ~_UNTRACKED:
            _remove_leftover(slot.path, name)


def _remove_leftover(root: Path, name: str) -> None:
    """Remove an untracked file or folder (a link as a link) and the folders it leaves empty."""
    target = root / name
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)
    _remove_empty_parents(target.parent, root)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty, or already gone
        folder = folder.parent


def _check_link(slot: Slot) -> None:
    # without its `.git` file, git commands in the slot would reach the user's repository
    if not (slot.path / ".git").is_file():
        raise GitError(f"slot {slot.index} lost its .git file")


def _remove_links(slot: Slot) -> None:
    """Links and FIFOs go before git writes the tree: it would write a tracked file's
    content through a link at its path (outside the worktree, if the link says so), and
    it never lists a FIFO to be cleaned. Committed links are written again."""
    for entry in links_and_special_files(slot.path):
        entry.unlink(missing_ok=True)


def reset_slot(slot: Slot, commit: str) -> None:
    """Make the slot's tree exactly `commit`: tracked files reset, everything else removed."""
    _check_link(slot)
    try:
        _remove_links(slot)
        slot.repo.reset(pygit2.Oid(hex=commit), ResetMode.HARD)
        _remove_untracked(slot, only_ignored=False)
    except (pygit2.GitError, OSError) as error:
        raise GitError(f"resetting slot {slot.index} failed: {error}") from None


@dataclass(frozen=True)
class PathChange:
    status: str  # A, M, D, R (renamed), C (copied), T (type changed)
    path: str
    old_path: str | None = None
    mode: int = 0  # the new file's git mode (0 when deleted)

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if self.old_path is None else (self.old_path, self.path)


@dataclass(frozen=True)
class Change:
    patch: str
    files: tuple[PathChange, ...]
    refused: str | None = None  # why it was refused before a byte of it was read

    @property
    def empty(self) -> bool:
        return not self.files


def collect_change(slot: Slot, parent: str, scope: ScopeSpec) -> Change:
    """Stage whatever the proposer did and return it as a patch against `parent`.

    The worktree is first inspected on the filesystem: a proposal over a `[scope]` cap,
    or holding a link, a FIFO or git metadata, comes back `refused` with no patch and is
    never staged. Ignored files the proposer left behind are removed, so the candidate
    is exactly the parent's tree plus the patch.
    """
    _check_link(slot)
    try:
        tree = slot.repo[pygit2.Oid(hex=parent)].peel(pygit2.Tree)
        # what the proposer committed or staged is part of its change, checked the same
        slot.repo.set_head(pygit2.Oid(hex=parent))
        slot.repo.index.read(force=True)
        if scope.outputs:
            _remove_outputs(slot, scope.outputs)
        inspection = inspect_worktree(slot.path, slot.repo, tree, scope)
        if inspection.why is not None:
            files = tuple(PathChange("?", p) for p in inspection.paths)
            return Change(patch="", files=files, refused=inspection.why)
        index = slot.repo.index
        index.add_all()
        index.write()
        _remove_untracked(slot, only_ignored=True)
        diff = index.diff_to_tree(tree, flags=_TEXT)
        diff.find_similar()
        files = tuple(
            PathChange(
                delta.status_char(),
                delta.new_file.path,
                delta.old_file.path if delta.status_char() in {"R", "C"} else None,
                delta.new_file.mode,
            )
            for delta in diff.deltas
        )
        patch = _content_patch(slot.repo, index, tree, diff, scope.max_patch_bytes)
        outside = _region_why(slot.repo, tree, index, files, scope)
    except (pygit2.GitError, OSError, KeyError) as error:
        raise GitError(f"reading the proposal in slot {slot.index} failed: {error}") from None
    if patch is None:
        why = (f"the proposal's patch is over [scope] max_patch_bytes "
               f"({describe_size(scope.max_patch_bytes)}); raise it if that is meant; "
               "nothing of it was kept")  # fmt: skip
        return Change(patch="", files=files, refused=why)
    if outside is not None:
        return Change(patch=patch, files=files, refused=f"{outside}; nothing of it was kept")
    return Change(patch=patch, files=files)


def _remove_outputs(slot: Slot, outputs: list[str]) -> None:
    """Untracked files `[scope] outputs` names (a log the directive asks for) are run-time
    leftovers, not part of the proposal: removed before it is inspected."""
    status = slot.repo.status(untracked_files="all")
    for name, flags in status.items():
        if flags == FileStatus.WT_NEW and matches(name, outputs):
            _remove_leftover(slot.path, name)


def _blob_text(repo: pygit2.Repository, where: pygit2.Tree | pygit2.Index, path: str) -> str | None:
    try:
        oid = where[path].id
    except (KeyError, ValueError):
        return None
    blob = repo[oid]
    return blob.data.decode(errors="replace") if isinstance(blob, pygit2.Blob) else None


def _region_why(
    repo: pygit2.Repository,
    tree: pygit2.Tree,
    index: pygit2.Index,
    files: tuple[PathChange, ...],
    scope: ScopeSpec,
) -> str | None:
    """Why a change to a region-scoped file leaves its regions, or None."""
    for path in sorted({p for f in files for p in f.paths}):
        region = scope.region_of(path)
        if region is None:
            continue
        old, new = _blob_text(repo, tree, path), _blob_text(repo, index, path)
        why = region_violation(path, old, new, *region)
        if why is not None:
            return why
    return None


# ratchet's patches ignore `.gitattributes` (`-diff`, `diff=driver`, `binary`): text or
# binary is decided by each file's content, as git would with no attributes at all
_TEXT = DiffOption.SHOW_BINARY | DiffOption.FORCE_TEXT
_BINARY = DiffOption.SHOW_BINARY | DiffOption.FORCE_BINARY


def _is_binary(repo: pygit2.Repository, oid: pygit2.Oid) -> bool:
    if oid.raw == bytes(len(oid.raw)):  # the absent side of an addition or deletion
        return False
    blob = repo[oid]
    return isinstance(blob, pygit2.Blob) and blob.is_binary


def _content_patch(
    repo: pygit2.Repository, index: pygit2.Index, tree: pygit2.Tree, text: pygit2.Diff, cap: int
) -> str | None:
    """The diff's patch, each file shown as text or binary by its content; None past
    `cap` bytes, stopping there: no file is read beyond the caps already checked."""
    binary: dict[tuple[str, str], pygit2.Patch | None] | None = None
    parts: list[bytes] = []
    size = 0
    for number, delta in enumerate(text.deltas):
        key = (delta.old_file.path, delta.new_file.path)
        patch = text[number]
        if _is_binary(repo, delta.old_file.id) or _is_binary(repo, delta.new_file.id):
            if binary is None:  # the same change, every file forced binary
                forced = index.diff_to_tree(tree, flags=_BINARY)
                forced.find_similar()
                binary = {(d.old_file.path, d.new_file.path): forced[i]
                          for i, d in enumerate(forced.deltas)}  # fmt: skip
            patch = binary.get(key, patch)
        data = patch.data if patch is not None else b""
        size += len(data)
        if size > cap:
            return None
        parts.append(data)
    return b"".join(parts).decode(errors="replace")


def staged_tree(slot: Slot) -> str:
    """The tree the slot's index holds: the candidate, once its change is collected."""
    return str(slot.repo.index.write_tree())


def checkout_tree(slot: Slot, tree: str) -> None:
    """Make the slot's files and index exactly `tree` (a tree or commit id); HEAD stays."""
    _check_link(slot)
    try:
        target = slot.repo[pygit2.Oid(hex=tree)].peel(pygit2.Tree)
        index = slot.repo.index
        index.read_tree(target)
        index.write()
        _remove_links(slot)
        slot.repo.checkout_index(strategy=CheckoutStrategy.FORCE)  # type: ignore[no-untyped-call]
        _remove_untracked(slot, only_ignored=False)
    except (pygit2.GitError, OSError, KeyError) as error:
        raise GitError(f"checking out in slot {slot.index} failed: {error}") from None


def rebase_tree(slot: Slot, base: str, onto: str, tree: str) -> str | None:
    """`tree`'s change from `base`, merged onto `onto` (three-way); None on a conflict."""
    repo = slot.repo
    ancestor, ours, theirs = (repo[pygit2.Oid(hex=x)].peel(pygit2.Tree) for x in (base, onto, tree))
    merged = repo.merge_trees(ancestor, ours, theirs)
    if merged.conflicts is not None:
        return None
    return str(merged.write_tree(repo))


def normalized_patch_hash(patch: str) -> str:
    """What a patch changes (files, removed and added lines), blind to context and blanks."""
    kept = [
        line.rstrip()
        for line in patch.splitlines()
        if line.startswith(("+", "-", "diff --git")) and line.rstrip() not in {"+", "-"}
    ]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:32]


def _signature(repo: pygit2.Repository) -> pygit2.Signature:
    try:
        return repo.default_signature
    except (KeyError, pygit2.GitError):
        return pygit2.Signature(
            FALLBACK_IDENTITY["GIT_AUTHOR_NAME"], FALLBACK_IDENTITY["GIT_AUTHOR_EMAIL"]
        )


def commit_candidate(slot: Slot, parent: str, message: str) -> str:
    """Write the staged candidate as a commit whose parent is `parent`; no hook runs."""
    tree = slot.repo.index.write_tree()
    author = _signature(slot.repo)
    oid = slot.repo.create_commit(None, author, author, message, tree, [pygit2.Oid(hex=parent)])
    return str(oid)


def ensure_ignored(project: Path) -> bool:
    """Add `.ratchet/` to the project's .gitignore; True when the file changed."""
    gitignore = project / ".gitignore"
    text = gitignore.read_text() if gitignore.exists() else ""
    if any(
        line.strip() in {STATE_DIR, f"{STATE_DIR}/", f"/{STATE_DIR}/"} for line in text.splitlines()
    ):
        return False
    prefix = "" if not text or text.endswith("\n") else "\n"
    gitignore.write_text(f"{text}{prefix}{STATE_DIR}/\n")
    return True


def commit_message(
    rationale: str, metric: str, old: float, new: float | None, experiment: int, run: str
) -> str:
    rationale = visible(rationale)  # `git log` prints it raw to a terminal
    change = f"{metric} {old:.6g} -> {new:.6g}"
    first = (rationale.strip().splitlines() or ["(no rationale)"])[0]
    subject = f"{change}: {first}"
    if len(subject) > 100:
        subject = subject[:99] + "…"
    return f"{subject}\n\n{rationale.strip()}\n\n{change}\nRatchet-Run: {run}\nRatchet-Experiment: {experiment}\n"
