"""Protected files are caught when touched, and added modules when they shadow real ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ratchet.integrity import compare_digests, digest_protected, shadowing_paths


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(
        tmp_path,
        {
            "prepare.py": "SPLIT = 0.8\n",
            "train.py": "LR = 0.1\n",
            "data/x.csv": "a,b\n1,2\n",
            "data/deep/y.csv": "c\n3\n",
            "notes.md": "hello\n",
        },
    )
    return tmp_path


PROTECTED = ["prepare.py", "data/**"]


def test_digests_cover_only_protected_files(project: Path) -> None:
    digests = digest_protected(project, PROTECTED)
    assert sorted(digests) == ["data/deep/y.csv", "data/x.csv", "prepare.py"]
    assert len(digests["prepare.py"]) == 64
    assert digest_protected(project, []) == {}


def test_plain_folder_name_protects_its_contents(project: Path) -> None:
    assert sorted(digest_protected(project, ["data"])) == ["data/deep/y.csv", "data/x.csv"]
    assert sorted(digest_protected(project, ["data/"])) == ["data/deep/y.csv", "data/x.csv"]


def test_unprotected_changes_are_ignored(project: Path) -> None:
    before = digest_protected(project, PROTECTED)
    write(project, {"train.py": "LR = 0.2\n", "notes.md": "bye\n", "new.py": ""})
    assert compare_digests(before, digest_protected(project, PROTECTED)) == []


def test_modification_addition_removal_are_reported(project: Path) -> None:
    before = digest_protected(project, PROTECTED)
    write(project, {"prepare.py": "SPLIT = 0.9\n", "data/new.csv": "z\n"})
    (project / "data/deep/y.csv").unlink()
    assert compare_digests(before, digest_protected(project, PROTECTED)) == [
        "data/deep/y.csv removed",
        "data/new.csv added",
        "prepare.py changed",
    ]


def test_rename_shows_as_removed_and_added(project: Path) -> None:
    before = digest_protected(project, PROTECTED)
    (project / "data/x.csv").rename(project / "data/z.csv")
    after = digest_protected(project, PROTECTED)
    assert compare_digests(before, after) == ["data/x.csv removed", "data/z.csv added"]


def test_same_size_same_mtime_rewrite_is_caught_by_content_only(project: Path) -> None:
    target = project / "data/x.csv"
    info = target.stat()
    by_content = digest_protected(project, PROTECTED)
    by_stat = digest_protected(project, PROTECTED, content=False)
    with target.open("r+") as handle:  # rewrite in place: same inode, same size
        handle.write("a,c\n1,2\n")
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert compare_digests(by_content, digest_protected(project, PROTECTED)) == [
        "data/x.csv changed"
    ]
    assert compare_digests(by_stat, digest_protected(project, PROTECTED, content=False)) == []
    assert by_stat["data/x.csv"].startswith("stat:")


def test_git_is_skipped(project: Path) -> None:
    write(project, {".git/config": "[core]\n", "data/.git": "gitdir: elsewhere\n"})
    digests = digest_protected(project, ["**"])
    assert not [p for p in digests if ".git" in p.split("/")]
    assert "data/x.csv" in digests


def test_large_file_is_hashed_whole(project: Path) -> None:
    big = project / "data/big.bin"
    big.write_bytes(b"\0" * (3 << 20))
    before = digest_protected(project, PROTECTED)
    with big.open("r+b") as handle:
        handle.seek((3 << 20) - 1)
        handle.write(b"\1")  # the last byte, in the last chunk
    assert compare_digests(before, digest_protected(project, PROTECTED)) == ["data/big.bin changed"]


def test_symlinks_are_recorded_not_followed(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    write(outside, {"secret.csv": "s\n", "target.csv": "t\n"})
    (project / "data/link.csv").symlink_to(outside / "target.csv")
    (project / "data/linked_dir").symlink_to(outside, target_is_directory=True)
    digests = digest_protected(project, PROTECTED)
    assert digests["data/link.csv"] == f"symlink:{outside / 'target.csv'}"
    assert digests["data/linked_dir"] == f"symlink:{outside}"
    assert not [p for p in digests if p.startswith("data/linked_dir/")]
    before = digests
    (project / "data/link.csv").unlink()
    (project / "data/link.csv").symlink_to(outside / "secret.csv")
    assert compare_digests(before, digest_protected(project, PROTECTED)) == [
        "data/link.csv changed"
    ]


def test_fifo_is_not_opened(project: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(project / "data/pipe")
    assert digest_protected(project, PROTECTED)["data/pipe"].startswith("special:")


def test_stdlib_and_installed_modules_are_shadowed() -> None:
    pytest.importorskip("numpy")
    added = ["json.py", "numpy/__init__.py", "numpy/core.py", "mymodel.py", "train.py"]
    assert shadowing_paths(added, []) == [
        "json.py (shadows the standard library's json)",
        "numpy/ (shadows the installed numpy)",
    ]


def test_package_dirs_and_compiled_modules_shadow() -> None:
    added = ["json/__init__.py", "os.pyc", "re.cpython-311-x86_64-linux-gnu.so"]
    assert shadowing_paths(added, []) == [
        "json/ (shadows the standard library's json)",
        "os.pyc (shadows the standard library's os)",
        "re.cpython-311-x86_64-linux-gnu.so (shadows the standard library's re)",
    ]


def test_harmless_names_pass() -> None:
    added = ["mymodel.py", "json.backup.py", "README.md", "json", ".github/ci.yml", "data/x.csv"]
    assert shadowing_paths(added, []) == []


def test_allow_list() -> None:
    assert shadowing_paths(["json.py", "csv.py"], ["json"]) == [
        "csv.py (shadows the standard library's csv)"
    ]


def test_nested_paths_do_not_count() -> None:
    assert shadowing_paths(["src/json.py", "pkg/numpy/__init__.py", "src/os/__init__.py"], []) == []


def test_an_unchanged_file_is_not_read_again_but_a_rewrite_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import os
    import time

    import ratchet.integrity as integrity

    hashed: list[int] = []
    original = hashlib.sha256

    def counting_sha256() -> hashlib._Hash:
        hashed.append(1)
        return original()

    monkeypatch.setattr(integrity.hashlib, "sha256", counting_sha256)
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 1000)
    first = digest_protected(tmp_path, ["data.bin"])
    assert digest_protected(tmp_path, ["data.bin"]) == first
    assert len(hashed) == 1  # the second digest came from the cache
    # a same-size rewrite with the old mtime put back still moves ctime: it is hashed again
    stat = data.stat()
    deadline = time.monotonic() + 10
    while True:  # until the file system's coarse clock has moved on: ctime then differs
        data.write_bytes(b"b" * 1000)
        os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        if data.stat().st_ctime_ns != stat.st_ctime_ns:
            break
        assert time.monotonic() < deadline, "ctime never moved"
    assert digest_protected(tmp_path, ["data.bin"]) != first
    assert len(hashed) == 2
