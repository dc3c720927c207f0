"""Links that a proposal, a candidate or the user's tree controls are never followed.

Each test is a real `ratchet run` in a temporary repository: the `llm` proposer through
the real openai SDK against the loopback fake server, the command proposer and a stub
agent CLI under the process layer and under bwrap. Secrets live in files outside the
repository; the tests check that no byte of them reached the model, the journal, the
commit messages, `results.tsv` or the briefs, that nothing outside the worktree was
written, and that the loop went on with a recorded decision and its why.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pygit2
import pytest
from fake_llm import FakeLLM, tool_call

from conftest import experiments, git, layer_or_skip, make_project, ratchet
from ratchet.executors.ray import archive, extract
from ratchet.safeio import Refused, read_capped, write_file

SECRET = "ssh-ed25519 TOPSECRET-4242-do-not-leak"
INNER = "INNER-SECRET-7373 of another project"
SCORE = "from value import X\nprint(f'score: {(X - 2) ** 2}')\n"


def outside(tmp_path: Path) -> dict[str, Path]:
    """Host files a link may point at: a secret, and a folder of another project."""
    host = tmp_path / "host"
    (host / "other").mkdir(parents=True)
    (host / "id_ed25519").write_text(SECRET + "\n")
    (host / "other" / "inner.txt").write_text(INNER + "\n")
    return {"secret": host / "id_ed25519", "folder": host / "other", "host": host}


def leaked_anywhere(project: Path, text: str, *also: str) -> list[str]:
    """Where `text` shows up among what ratchet wrote (and in `also`)."""
    state = project / ".ratchet"
    places = {p.name: p.read_bytes() for p in state.glob("*") if p.is_file()}
    places["commits"] = git(project, "log", "--all", "--format=%B").encode()
    for index, extra in enumerate(also):
        places[f"also-{index}"] = extra.encode()
    return [name for name, data in places.items() if text.encode() in data]


# the llm proposer's tools ---------------------------------------------------------------

LLM_SPEC = """
[sandbox]
kind = "process"
[scope]
editable = ["value.py", "leak.py", "journal.py", "gitconfig.py", "dangling.py", "lib", "lib/**"]
protected = ["score.py"]
context = ["score.py"]
[metric]
command = "{python} score.py"
name = "score"
[run]
max_experiments = {count}
[proposer]
kind = "llm"
model = "fake-model"
base_url = "{base_url}"
api_key_env = "FAKE_LLM_KEY"
max_turns = 30
"""


def linked_project(tmp_path: Path, fake: FakeLLM, host: dict[str, Path], count: int = 2) -> Path:
    """A project whose user committed links to a secret, to the journal, to their own
    `.git/config`, to nowhere, and to another project's folder, all in the editable scope."""
    root = tmp_path / "p"
    spec = LLM_SPEC.format(python=sys.executable, base_url=fake.base_url, count=count)
    project = make_project(root, {"value.py": "X = 5\n", "score.py": SCORE}, spec)
    links = {
        "leak.py": host["secret"],
        "journal.py": root / ".ratchet" / "journal.db",
        "gitconfig.py": root / ".git" / "config",
        "dangling.py": host["host"] / "never" / "created.py",
        "lib": host["folder"],
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "links")
    return project


def tool_results(request: dict[str, Any]) -> list[str]:
    """What each tool call answered, in order, as the model was told it."""
    return [str(m["content"]) for m in request["messages"] if m.get("role") == "tool"]


def test_llm_tools_follow_no_link_and_refuse_hidden_and_outside_paths(tmp_path: Path) -> None:
    host = outside(tmp_path)
    script = [
        tool_call("read_file", path="leak.py"),
        tool_call("read_file", path="journal.py"),
        tool_call("read_file", path="gitconfig.py"),
        tool_call("read_file", path="dangling.py"),
        tool_call("read_file", path="lib"),
        tool_call("read_file", path="lib/inner.txt"),
        tool_call("read_file", path=".git/config"),
        tool_call("read_file", path="../../journal.db"),
        tool_call("read_file", path=str(host["secret"])),
        tool_call("list_files"),
        tool_call("grep", pattern="SECRET|repositoryformatversion|SQLite|X ="),
        tool_call(
            "edit",
            path="gitconfig.py",
            search="[core]",
            replace="[core]\n\tfsmonitor = touch pwned",
        ),
        tool_call("edit", path="dangling.py", search="", replace="print('planted')\n"),
        tool_call("edit", path="lib/new.py", search="", replace="print('planted')\n"),
        tool_call("edit", path="value.py", search="X = 5", replace="X = 2"),
        tool_call("finish", rationale="X to the minimum"),
        tool_call("finish", rationale="nothing more"),  # the second experiment: the loop goes on
    ]
    with FakeLLM(script) as fake:
        project = linked_project(tmp_path, fake, host)
        git_config = (project / ".git" / "config").read_bytes()
        result = ratchet(project, "run", env={"FAKE_LLM_KEY": "sk-fake"})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "keep", "no-change"]
    assert rows[1]["rationale"] == "X to the minimum"

    # no byte of anything outside the worktree reached the model, in any request
    sent = json.dumps([m for r in fake.requests for m in r["messages"] if m["role"] != "assistant"])
    for forbidden in ["TOPSECRET", "INNER-SECRET", "repositoryformatversion", "SQLite format"]:
        assert forbidden not in sent, forbidden
    # nothing outside the worktree was written
    assert (project / ".git" / "config").read_bytes() == git_config
    assert not (host["host"] / "never").exists()
    assert sorted(p.name for p in host["folder"].iterdir()) == ["inner.txt"]
    assert host["secret"].read_text() == SECRET + "\n"

    # the model was told why each refused call failed
    answers = tool_results(fake.requests[15])  # the request answered with `finish`
    assert len(answers) == 15
    reads, listing, grep, edits = answers[:9], answers[9], answers[10], answers[11:15]
    for answer in reads[:5]:
        assert answer.startswith("error: not a readable project file")
    assert "leak.py is a symbolic link, which ratchet does not follow" in reads[0]
    assert "lib is a symbolic link" in reads[4]
    assert "not tracked" in reads[5]
    assert "inside a .git folder" in reads[6]
    assert "'..'" in reads[7]
    assert "absolute path" in reads[8]
    assert listing.splitlines()[:3] == ["ratchet.toml", "score.py", "value.py"]
    assert ".gitignore" not in listing  # hidden, and not named by the scope
    assert "(not readable: dangling.py is a symbolic link" in listing
    assert grep.splitlines()[0] == "value.py:1: X = 5"
    assert "(not searched: lib is a symbolic link" in grep
    assert "gitconfig.py is a symbolic link" in edits[0]
    assert "dangling.py is a symbolic link" in edits[1]
    assert "lib is a symbolic link" in edits[2]
    assert edits[3] == "edited value.py"
    # the prompt showed the scope's files, the links as refusals, not their targets
    prompt = fake.requests[0]["messages"][1]["content"]
    assert "--- value.py\nX = 5" in prompt
    assert "--- leak.py\n(not a readable project file: leak.py is a symbolic link" in prompt


def test_search_replace_and_whole_file_replies_do_not_write_through_links(
    tmp_path: Path,
) -> None:
    host = outside(tmp_path)
    replies = [
        {
            "content": "Turn on a monitor.\n\ngitconfig.py\n<<<<<<< SEARCH\n[core]\n=======\n"
            "[core]\n\tfsmonitor = touch pwned\n>>>>>>> REPLACE\n"
        },
        {"content": "Plant a module.\n\nlib/evil.py\n```python\nprint('planted')\n```\n"},
        {"content": "Write the secret.\n\nleak.py\n```python\nprint('planted')\n```\n"},
    ]
    with FakeLLM(replies) as fake:
        project = linked_project(tmp_path, fake, host, count=3)
        git_config = (project / ".git" / "config").read_bytes()
        result = ratchet(project, "run", env={"FAKE_LLM_KEY": "sk-fake"})
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    assert [r["decision"] for r in rows] == ["invalid-proposal"] * 3
    assert "gitconfig.py is a symbolic link" in rows[0]["why"]
    assert "lib is a symbolic link" in rows[1]["why"]
    assert "leak.py is a symbolic link" in rows[2]["why"]
    assert (project / ".git" / "config").read_bytes() == git_config
    assert sorted(p.name for p in host["folder"].iterdir()) == ["inner.txt"]
    assert host["secret"].read_text() == SECRET + "\n"


# files handed back by proposers -------------------------------------------------------

NOTE_SWAPS = {
    "link": 'ln -s {secret} "$RATCHET_PROPOSAL"',
    "fifo": 'mkfifo "$RATCHET_PROPOSAL"',  # a reader that followed it would wait forever
    "folder": 'mkdir "$RATCHET_PROPOSAL" && ln -s {secret} "$RATCHET_PROPOSAL/x"',
}
NOTE_WHYS = {
    "link": "is a symbolic link, which ratchet does not follow",
    "fifo": "is not a regular file (a FIFO, socket or device)",
    "folder": "is a folder",
}


@pytest.mark.parametrize("layer", ["process", "bwrap"])
@pytest.mark.parametrize("swap", sorted(NOTE_SWAPS))
def test_a_rationale_note_swapped_for_a_link_is_an_invalid_proposal(
    score_project: Any, tmp_path: Path, layer: str, swap: str
) -> None:
    layer_or_skip(layer)
    host = outside(tmp_path)
    propose = NOTE_SWAPS[swap].format(secret=host["secret"]) + " && printf 'X = 2\\n' >value.py"
    project = score_project(propose, max_experiments=2, sandbox=layer)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    assert [r["decision"] for r in rows] == ["invalid-proposal"] * 2  # and the loop went on
    for row in rows:
        assert (
            row["why"]
            == f"the proposer's note ($RATCHET_PROPOSAL): .ratchet-proposal {NOTE_WHYS[swap]}"
        )
    assert leaked_anywhere(project, "TOPSECRET", result.stdout, result.stderr) == []
    assert git(project, "status", "--porcelain") == ""
    assert not (project / ".ratchet" / "slots" / "0" / ".ratchet-proposal").exists()


def test_a_rationale_note_over_the_cap_is_an_invalid_proposal(score_project: Any) -> None:
    propose = (
        "head -c 70000 /dev/zero | tr '\\0' x >\"$RATCHET_PROPOSAL\" && printf 'X = 2\\n' >value.py"
    )
    project = score_project(propose)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    row = experiments(project)[-1]
    assert row["decision"] == "invalid-proposal"
    assert "larger than 64 KiB" in row["why"]


def test_a_plain_rationale_note_is_still_read(score_project: Any) -> None:
    propose = "echo 'moved X to 2' >\"$RATCHET_PROPOSAL\" && printf 'X = 2\\n' >value.py"
    project = score_project(propose)
    assert ratchet(project, "run").returncode == 0
    row = experiments(project)[-1]
    assert (row["decision"], row["rationale"]) == ("keep", "moved X to 2")


FAKE_CLAUDE = """#!/bin/sh
printf 'X = 2\\n' >value.py
rm -f .ratchet-agent-output
ln -s {secret} .ratchet-agent-output
"""
CLAUDE_SPEC = """
[sandbox]
kind = "{layer}"
[scope]
editable = ["value.py"]
[metric]
command = "{python} score.py"
name = "score"
[run]
max_experiments = 1
[proposer]
kind = "claude-code"
"""


@pytest.mark.parametrize("layer", ["process", "bwrap"])
def test_an_agent_cli_output_swapped_for_a_link_is_not_followed(tmp_path: Path, layer: str) -> None:
    layer_or_skip(layer)
    host = outside(tmp_path)
    # were it followed, the secret would be a well-formed result and become the rationale
    result_json = {"type": "result", "is_error": False, "result": f"Rationale: {SECRET}"}
    host["secret"].write_text(json.dumps(result_json) + "\n")
    stub = tmp_path / "bin" / "claude"  # on PATH: bwrap exposes PATH's folders, not /tmp
    stub.parent.mkdir()
    stub.write_text(FAKE_CLAUDE.format(secret=host["secret"]))
    stub.chmod(0o755)
    spec = CLAUDE_SPEC.format(layer=layer, python=sys.executable)
    project = make_project(tmp_path / "p", {"value.py": "X = 5\n", "score.py": SCORE}, spec)
    result = ratchet(project, "run", env={"PATH": f"{stub.parent}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    row = experiments(project)[-1]
    assert row["decision"] == "invalid-proposal"
    assert row["why"] == (
        "claude's files: .ratchet-agent-output is a symbolic link, which ratchet does not follow"
    )
    assert leaked_anywhere(project, "TOPSECRET", result.stdout, result.stderr) == []


# the user's tree ------------------------------------------------------------------------


def test_a_directive_that_is_a_link_is_refused_in_one_line(
    score_project: Any, tmp_path: Path
) -> None:
    host = outside(tmp_path)
    project = score_project("printf 'X = 2\\n' >value.py", extra="")
    spec = (
        (project / "ratchet.toml")
        .read_text()
        .replace('editable = ["value.py"]', 'editable = ["value.py"]\ndirective = "program.md"')
    )
    (project / "ratchet.toml").write_text(spec)
    (project / "program.md").symlink_to(host["secret"])
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "a directive that is a link")
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "ratchet: error: [scope] directive: program.md is a symbolic link, "
        "which ratchet does not follow"
    )
    assert leaked_anywhere(project, "TOPSECRET", result.stdout) == []


def test_a_ray_worker_unpacks_no_link_that_leads_out_of_the_tree(tmp_path: Path) -> None:
    host = outside(tmp_path)
    project = make_project(tmp_path / "p", {"value.py": "X = 5\n"})
    (project / "inside").symlink_to("value.py")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "a link inside")
    repo = pygit2.Repository(str(project))
    tree = repo.head.peel(pygit2.Tree)
    extract(archive(repo, tree), tmp_path / "good")
    assert os.readlink(tmp_path / "good" / "inside") == "value.py"

    (project / "escape").symlink_to(host["secret"])
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "a link outside")
    tree = repo.head.peel(pygit2.Tree)
    with pytest.raises(RuntimeError, match="escape"):
        extract(archive(repo, tree), tmp_path / "bad")
    assert not (tmp_path / "bad" / "escape").is_symlink()


# the module itself, on a real folder -----------------------------------------------------


def test_write_file_replaces_a_file_and_never_writes_through_a_link(tmp_path: Path) -> None:
    host = outside(tmp_path)
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "run.sh").write_text("old\n")
    (root / "run.sh").chmod(0o755)
    write_file(root, "run.sh", b"new\n")
    assert (root / "run.sh").read_text() == "new\n"
    assert (root / "run.sh").stat().st_mode & 0o777 == 0o755
    (root / "link").symlink_to(host["secret"])
    (root / "via").symlink_to(host["folder"])
    with pytest.raises(Refused, match="link is a symbolic link"):
        write_file(root, "link", b"planted")
    with pytest.raises(Refused, match="via is a symbolic link"):
        write_file(root, "via/new.txt", b"planted")
    with pytest.raises(Refused, match=r"'\.\.'"):
        read_capped(root, "sub/../../host/id_ed25519", 100)
    assert host["secret"].read_text() == SECRET + "\n"
    assert sorted(p.name for p in host["folder"].iterdir()) == ["inner.txt"]
    assert sorted(p.name for p in root.iterdir()) == ["link", "run.sh", "sub", "via"]


# files a candidate hands back ----------------------------------------------------------

METRIC_SPEC = """
[sandbox]
kind = "{layer}"
[scope]
editable = ["value.py"]
[metric]
command = "sh metric.sh"
name = "score"
file = "out.json"
[run]
max_experiments = 1
[proposer]
kind = "command"
command = "printf 'X = 2\\\\n' >value.py"
"""
# the incumbent writes its score; the candidate puts a link (or a FIFO) in its place
METRIC_SH = """rm -f out.json
if grep -q 'X = 2' value.py; then {swap}; else echo '{{"score": 9}}' >out.json; fi
"""
METRIC_SWAPS = {"link": "ln -s {secret} out.json", "fifo": "mkfifo out.json"}


@pytest.mark.parametrize("layer", ["process", "bwrap"])
@pytest.mark.parametrize("swap", sorted(METRIC_SWAPS))
def test_a_metrics_file_swapped_for_a_link_or_fifo_is_not_read(
    tmp_path: Path, layer: str, swap: str
) -> None:
    layer_or_skip(layer)
    host = outside(tmp_path)
    host["secret"].write_text('{"score": 0.0, "TOPSECRET": 1}\n')  # a perfect score, if read
    swapped = METRIC_SWAPS[swap].format(secret=host["secret"])
    files = {"value.py": "X = 5\n", "metric.sh": METRIC_SH.format(swap=swapped)}
    project = make_project(tmp_path / "p", files, METRIC_SPEC.format(layer=layer))
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    row = experiments(project)[-1]
    assert row["decision"] != "keep"
    kind = "a symbolic link" if swap == "link" else "not a regular file"
    assert f"the metrics file is refused: out.json is {kind}" in row["why"]
    assert leaked_anywhere(project, "TOPSECRET", result.stdout, result.stderr) == []


KNOBS_SPEC = """
[sandbox]
kind = "process"
[scope]
editable = ["value.py", "linked.py"]
[metric]
command = "{python} score.py"
name = "score"
[run]
max_experiments = 2
[proposer]
kind = "knobs"
"""


def test_the_knobs_proposer_tunes_no_file_through_a_link(tmp_path: Path) -> None:
    host = outside(tmp_path)
    elsewhere = host["host"] / "knobs.py"
    elsewhere.write_text("Y = 3  # ratchet: knob int 0..10\n")
    files = {"value.py": "X = 5  # ratchet: knob int 0..10\n", "score.py": SCORE}
    project = make_project(tmp_path / "p", files, KNOBS_SPEC.format(python=sys.executable))
    (project / "linked.py").symlink_to(elsewhere)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "a knob file that is a link")
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)[1:]
    assert len(rows) == 2 and all(r["decision"] is not None for r in rows)
    assert all("Y " not in r["rationale"] for r in rows)  # only X is a knob
    assert elsewhere.read_text() == "Y = 3  # ratchet: knob int 0..10\n"
