"""Proposals that are not plain files, touch git's metadata, or are too big.

Each case is a real proposal in a real repository, under the `process` and `bwrap`
layers: the decision is `out-of-scope` with a why naming the path and what it is,
nothing of it reaches the run branch, and the loop goes on to keep an honest proposal
that follows. The proposer reads its experiment number from the brief, so that one run
tries every case in turn, each on a slot reset from the one before.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import experiments, git, layer_or_skip, make_project, ratchet

PY = sys.executable
LAYERS = ["process", "bwrap"]
PICK = "import json, os\nprint(json.load(open(os.environ['RATCHET_BRIEF']))['experiment'])\n"


SCORE = "from value import X\nprint(f'score: {(X - 2) ** 2}')\n"
HONEST = "echo 'X = 3' > value.py"
MAKE_SOCKET = "import socket; socket.socket(socket.AF_UNIX).bind('value.sock')"
MANY_FILES = (
    "import os\nos.makedirs('many')\n"
    "for i in range(50000):\n    open(f'many/f{i}.txt', 'w').close()\n"
)

# (what the proposer does, what the why must say): each is refused, whatever the layer
CASES = [
    ("ln -s /etc/passwd leak.txt", "leak.txt, a symbolic link to /etc/passwd"),
    ("ln -s ../../.. up", "up, a symbolic link to ../../.."),
    ("rm value.py && ln -s score.py value.py", "value.py, a symbolic link to score.py"),
    ("ln -s /etc/passwd ok_link", "an allowed link must have a relative target"),
    ("ln -s ../../../../outside ok_link", "resolves outside the worktree"),
    ("ln -s .git ok_link", "resolves to a hidden or git path"),
    ("ln -s missing.txt ok_link", "points at nothing"),
    ("mkfifo pipe && echo 'X = 3' > value.py", "pipe, a FIFO (named pipe)"),
    (f'{PY} -c "{MAKE_SOCKET}"', "value.sock, a Unix socket"),
    ("mkdir -p sub/.git && echo '[core]' > sub/.git/config", "sub/.git, a nested git repository"),
    ("mkdir sub && echo 'gitdir: /tmp' > sub/.git", "sub/.git, git metadata"),
    ("echo '*.py -diff' > .gitattributes && " + HONEST, ".gitattributes, git metadata"),
    ("mkdir -p src && echo '* -diff' > src/.GitAttributes", "src/.GitAttributes, git metadata"),
    ("printf '[submodule \"x\"]\\n' > .gitmodules", ".gitmodules, git metadata"),
    ("truncate -s 200M big.bin", "big.bin is 200.0 MiB, over [scope] max_file_bytes (1.0 MiB)"),
    (f"{PY} many.py", "more than 50 files; raise [scope] max_files"),
    (f"{PY} -c \"open('wide.txt', 'w').write('x = 1\\n' * 4000)\"", "[scope] max_patch_bytes"),
    ("rm data.txt", "the replaced data.txt is 1.5 MiB, over [scope] max_file_bytes"),
]


def script(cases: list[str], last: str) -> str:
    """A proposer running case k at experiment k + 2 (the baseline is #1), then `last`."""
    lines = [f"n=$({PY} pick.py)", 'case "$n" in']
    lines += [f"  {k + 2}) {action};;" for k, action in enumerate(cases)]
    lines += [f"  *) {last};;", "esac"]
    return "\n".join(lines) + "\n"


def project(tmp_path: Path, layer: str, cases: list[str], last: str = HONEST,
            scope: str = "", files: dict[str, str] | None = None) -> Path:  # fmt: skip
    spec = f"""
[scope]
editable = ["**"]
allow_symlinks = ["ok_link"]
max_patch_bytes = "16k"
{scope}
[metric]
command = "{PY} score.py"
name = "score"
budget = "20s"
grace = "0.5s"
[run]
max_experiments = {len(cases) + 1}
give_up_after = 100
[proposer]
kind = "command"
command = "sh propose.sh"
budget = "60s"
[sandbox]
kind = "{layer}"
"""
    tracked = {"value.py": "X = 5\n", "score.py": SCORE, "pick.py": PICK, "many.py": MANY_FILES,
               "propose.sh": script(cases, last), "data.txt": "d" * (3 * 2**19), **(files or {})}  # fmt: skip
    return make_project(tmp_path / "p", tracked, spec)


def branch_files(root: Path) -> dict[str, str]:
    """Path -> git mode of every file on the run branch."""
    listing = git(root, "ls-tree", "-r", "ratchet/default").splitlines()
    return {line.split("\t")[1]: line.split()[0] for line in listing}


@pytest.mark.parametrize("layer", LAYERS)
def test_every_refused_kind_of_proposal_is_out_of_scope_and_the_loop_goes_on(
    tmp_path: Path, layer: str
) -> None:
    layer_or_skip(layer)
    root = project(tmp_path, layer, [action for action, _ in CASES])
    result = ratchet(root, "run", timeout=900)
    assert result.returncode == 0, result.stderr
    rows = experiments(root)
    assert [r["decision"] for r in rows] == ["keep"] + ["out-of-scope"] * len(CASES) + ["keep"]
    for row, (action, said) in zip(rows[1:], CASES, strict=False):
        assert said in row["why"], (action, row["why"])
        assert row["value"] is None  # never measured
    assert "nothing of it was kept" in rows[1]["why"]
    # only the honest keep reached the branch, and the slot was clean for it
    assert set(branch_files(root)) == set(git(root, "ls-files").split())
    assert git(root, "diff", "--name-only", "main", "ratchet/default") == "value.py"
    assert git(root, "status", "--porcelain") == ""
    # the refused 50,000 files and the 200 MB file were never staged: listed, not patched
    many = next(r for r in rows if "max_files" in (r["why"] or ""))
    assert many["patch"] == "" and len(json.loads(many["files"])) == 51


@pytest.mark.parametrize("layer", LAYERS)
def test_an_allowed_link_inside_the_worktree_is_kept(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    root = project(tmp_path, layer, [], last=f"ln -s value.py ok_link && {HONEST}")
    result = ratchet(root, "run", timeout=300)
    assert result.returncode == 0, result.stderr
    assert [r["decision"] for r in experiments(root)] == ["keep", "keep"]
    assert branch_files(root)["ok_link"] == "120000"
    assert git(root, "cat-file", "-p", "ratchet/default:ok_link") == "value.py"


def test_what_the_proposer_stages_or_commits_is_checked_too(tmp_path: Path) -> None:
    """Under `process` only: the proposer runs git itself, on the slot's own index: what
    it stages or commits is checked like what it leaves in the worktree."""
    cases = [
        "git init -q inner && echo x > inner/x && git -C inner add x",
        "git update-index --add --cacheinfo 160000,$(git rev-parse HEAD),gl",
        "git update-index --add --cacheinfo 120000,$(echo /etc/passwd | git hash-object -w "
        "--stdin),ghost",
        "truncate -s 200M big.bin && git add big.bin && git commit -qm big",
    ]
    root = project(tmp_path, "process", cases)
    result = ratchet(root, "run", timeout=300)
    assert result.returncode == 0, result.stderr
    rows = experiments(root)
    # a gitlink or link staged with nothing at its path is dropped with the staging:
    # the candidate is what the worktree holds
    assert [r["decision"] for r in rows] == ["keep", "out-of-scope", "no-change", "no-change",
                                             "out-of-scope", "keep"]  # fmt: skip
    assert "inner/.git, a nested git repository" in rows[1]["why"]
    assert "the staged big.bin is 200.0 MiB, over [scope] max_file_bytes" in rows[4]["why"]
    assert set(branch_files(root)) == set(git(root, "ls-files").split())


@pytest.mark.parametrize("layer", LAYERS)
def test_user_attributes_do_not_turn_patches_binary(tmp_path: Path, layer: str) -> None:
    """The user committed `*.py -diff` and `*.dat diff`: the journal's patches and
    `ratchet review` still show a text file as text and a binary one as binary."""
    layer_or_skip(layer)
    honest = f"{HONEST} && {PY} -c \"open('blob.dat', 'wb').write(bytes(range(256)))\""
    files = {".gitattributes": "*.py -diff\n*.dat diff\n", "blob.dat": "text for now\n"}
    root = project(tmp_path, layer, [], last=honest, files=files)
    result = ratchet(root, "run", timeout=300)
    assert result.returncode == 0, result.stderr
    keep = experiments(root)[-1]
    assert keep["decision"] == "keep"
    patch = keep["patch"]
    text, binary = patch.split("diff --git a/value.py")[1], patch.split("diff --git a/value.py")[0]
    assert "-X = 5\n+X = 3\n" in text and "GIT binary patch" not in text
    assert "blob.dat" in binary and "GIT binary patch" in binary
    review = ratchet(root, "review", "--patch")
    assert review.returncode == 0, review.stderr
    assert "+X = 3" in review.stdout
    shown = json.loads(ratchet(root, "review", "--json").stdout)
    stats = {s["path"]: s for s in shown["keeps"][0]["diffstat"]}
    assert stats["value.py"]["added"] == 1 and stats["value.py"]["removed"] == 1
