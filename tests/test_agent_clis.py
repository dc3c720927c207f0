"""The agent CLI proposers, against stub `claude`, `codex` and `aider` executables on PATH,
for ratchet's side of the cases the real programs cannot be made to show (those that
can are in test_agent_clis_real.py, against the real CLIs).

One stub program, installed under the three names, records how it was called (argv,
working folder, stdin, environment, aider's message file), makes the edits its test asks
for, and prints what its test gives it: each CLI's own JSON shape or text. A full
`ratchet run` then proves the argument building, the parsing and the journal's record.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from conftest import experiments, git, make_project, ratchet
from ratchet.proposers.agent_reports import parse_aider, parse_claude

STUB = """#!{python}
import json, os, sys, time
HERE = {here!r}
config = json.load(open(os.path.join(HERE, "config.json")))
record = {{
    "name": os.path.basename(sys.argv[0]),
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "stdin": sys.stdin.read(),  # hangs, and times out, unless stdin is closed
    "env": {{k: os.environ.get(k) for k in ("AGENT_TOKEN", "OTHER_SECRET", "RATCHET_BRIEF")}},
}}
if "--message-file" in sys.argv:
    record["message"] = open(sys.argv[sys.argv.index("--message-file") + 1]).read()
with open(os.path.join(HERE, "calls.jsonl"), "a") as log:
    log.write(json.dumps(record) + "\\n")
for path, text in config.get("write", {{}}).items():
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
time.sleep(config.get("sleep", 0))
sys.stdout.write(config.get("stdout", ""))
sys.stderr.write(config.get("stderr", ""))
sys.exit(config.get("exit", 0))
"""

SPEC = """
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
context = ["score.py"]
protected = ["score.py", "secret_eval.py"]
directive = "program.md"
[metric]
command = "{python} score.py"
name = "score"
grace = "0.5s"
[run]
max_experiments = 1
[proposer]
kind = "{kind}"
budget = "{budget}"
{extra}
"""

FILES = {
    "value.py": "X = 5\n",
    "score.py": "from value import X\nprint(f'score: {(X - 2) ** 2}')\n",
    "secret_eval.py": "HOLDOUT = 42\n",
    "program.md": "Push X toward the minimum of the score.\n",
}
KEY = "tok-named-0123456789"
OTHER = "sec-unnamed-0123456789"
BEST = {"value.py": "X = 2\n"}

CLAUDE_RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 1234,
    "num_turns": 3,
    "result": "I set X to 2.\n\nRationale: move X to the minimum of the score",
    "session_id": "sess-0001",
    "total_cost_usd": 0.0421,
    "usage": {
        "input_tokens": 1200,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 500,
        "output_tokens": 250,
    },
}


def codex_events(*extra: dict[str, Any], failed: str | None = None) -> str:
    events: list[dict[str, Any]] = [
        {"type": "thread.started", "thread_id": "thread-0001"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "hm"}},
        {"type": "item.completed", "item": {"id": "item_1", "type": "file_change",
         "changes": [{"path": "value.py", "kind": "update"}], "status": "completed"}},
        {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message",
         "text": "Done.\nRationale: X = 2 minimizes (X - 2)^2"}},
        *extra,
    ]  # fmt: skip
    if failed:
        events.append({"type": "turn.failed", "error": {"message": failed}})
    else:
        usage = {"input_tokens": 5000, "cached_input_tokens": 1000, "output_tokens": 400}
        events.append({"type": "turn.completed", "usage": usage})
    return "".join(json.dumps(e) + "\n" for e in events)


def install_stubs(tmp_path: Path, config: dict[str, Any]) -> Path:
    """`claude`, `codex` and `aider` in a fresh folder; returns the folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "config.json").write_text(json.dumps(config))
    for name in ("claude", "codex", "aider"):
        stub = bin_dir / name
        stub.write_text(STUB.format(python=sys.executable, here=str(bin_dir)))
        stub.chmod(0o755)
    return bin_dir


def calls(bin_dir: Path) -> list[dict[str, Any]]:
    log = bin_dir / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_agent(
    tmp_path: Path,
    kind: str,
    config: dict[str, Any],
    extra: str = "",
    budget: str = "20s",
    path: str | None = None,
) -> tuple[Path, Path, Any]:
    """A project, the stubs, and `ratchet run` with the stubs first on PATH."""
    bin_dir = install_stubs(tmp_path, config)
    spec = SPEC.format(python=sys.executable, kind=kind, budget=budget, extra=extra)
    project = make_project(tmp_path / "project", FILES, spec)
    env = {"PATH": path if path is not None else f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "AGENT_TOKEN": KEY, "OTHER_SECRET": OTHER}  # fmt: skip
    return project, bin_dir, ratchet(project, "run", env=env)


def last_experiment(project: Path, result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return experiments(project)[-1]


def test_only_the_named_secrets_reach_the_agent(tmp_path: Path) -> None:
    """Stub: the real CLIs do not print their environment; this is ratchet's filtering."""
    config = {"write": BEST, "stdout": codex_events()}
    project, bin_dir, result = run_agent(tmp_path, "codex", config, 'env = ["AGENT_TOKEN"]')
    assert last_experiment(project, result)["decision"] == "keep"
    [call] = calls(bin_dir)
    assert call["env"]["AGENT_TOKEN"] == KEY
    assert call["env"]["OTHER_SECRET"] is None


def test_output_that_is_not_the_clis_json_is_an_invalid_proposal(tmp_path: Path) -> None:
    """Stub: the real claude always prints its JSON result; a wrapper or a wrong program
    named `claude` may not, and ratchet must say so."""
    config = {"write": BEST, "stdout": "hello there\n"}
    project, _, result = run_agent(tmp_path, "claude-code", config)
    row = last_experiment(project, result)
    assert row["decision"] == "invalid-proposal"
    assert row["why"] == "claude printed no JSON result: hello there"


def test_a_missing_cli_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    path = f"{empty}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"
    project, _, result = run_agent(tmp_path, "aider", {}, path=path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ratchet: error: aider not found on PATH; install aider or set [proposer] executable"
    )
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    assert db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 0  # said at once
    db.close()


def test_the_spec_may_name_the_executable(tmp_path: Path) -> None:
    """Stub: finding the program is ratchet's side, whatever the program is."""
    bin_dir = install_stubs(tmp_path, {})
    own = tmp_path / "tools" / "my-claude"
    own.parent.mkdir()
    own.write_text((bin_dir / "claude").read_text())
    own.chmod(0o755)
    config = {"write": BEST, "stdout": json.dumps(CLAUDE_RESULT)}
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    path = f"{empty}{os.pathsep}{os.environ['PATH']}"  # no claude there
    project, _, result = run_agent(
        tmp_path, "claude-code", config, f'executable = "{own}"', path=path
    )
    assert last_experiment(project, result)["decision"] == "keep"
    assert [c["name"] for c in calls(bin_dir)] == ["my-claude"]

    (project / "ratchet.toml").write_text(
        (project / "ratchet.toml").read_text().replace(str(own), "tools/nothing")
    )
    git(project, "commit", "-qam", "a missing executable")
    result = ratchet(project, "run", "--name", "second")
    assert result.returncode == 2
    assert "[proposer] executable: tools/nothing is not an executable file" in result.stderr


# the parsers, on the variations the runs above do not show ------------------------------
def test_aider_token_counts_with_suffixes_and_without_a_cost() -> None:
    text = (
        "Tokens: 950 sent, 12k received.\n"
        "Rationale: first\n"
        "Tokens: 1.5M sent, 2.1k cache write, 300 cache hit, 40 received.\n"
    )
    reply = parse_aider(text)
    assert (reply.tokens_in, reply.tokens_out) == (950 + 1_500_000, 12_000 + 40)
    assert reply.usd is None and reply.rationale == "first"
    edited = parse_aider("Applied edit to value.py\nApplied edit to value.py\n")
    assert edited.rationale == "aider edited value.py" and edited.tokens_in == 0


def test_claude_json_printed_pretty_and_a_markdown_rationale() -> None:
    data = {**CLAUDE_RESULT, "result": "Changed it.\n**Rationale:** smaller X"}
    reply = parse_claude(json.dumps(data, indent=2))
    assert reply.rationale == "smaller X" and reply.usd == 0.0421
    assert parse_claude(json.dumps({**data, "result": "just this"})).rationale == "just this"


def test_the_environment_holds_the_key_where_the_cli_reads_it_and_no_user_config(
    tmp_path: Path,
) -> None:
    from ratchet.proposers.agent_setup import agent_environment, codex_config
    from ratchet.spec import ProposerSpec

    parent = {"PATH": "/usr/bin", "HOME": "/root", "GATEWAY_KEY": KEY, "OTHER_SECRET": OTHER,
              "ANTHROPIC_BASE_URL": "http://elsewhere", "XDG_CONFIG_HOME": "/root/.config",
              "ANTHROPIC_API_KEY": "sk-users-own-key", "AIDER_MODEL": "gpt-3"}  # fmt: skip
    spec = ProposerSpec(kind="claude-code", api_key_env="GATEWAY_KEY", retries=2,
                        base_url="http://127.0.0.1:4000", request_timeout=30)  # fmt: skip
    env = agent_environment(spec, tmp_path, parent, {})
    assert env["ANTHROPIC_API_KEY"] == KEY and "GATEWAY_KEY" not in env
    assert "OTHER_SECRET" not in env and "AIDER_MODEL" not in env
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4000"  # the spec's, not the shell's
    assert env["HOME"] == str(tmp_path) and env["XDG_CONFIG_HOME"] == str(tmp_path / ".config")
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path / ".claude")
    assert (env["CLAUDE_CODE_MAX_RETRIES"], env["API_TIMEOUT_MS"]) == ("2", "30000")
    assert env["DISABLE_TELEMETRY"] == env["DISABLE_AUTOUPDATER"] == "1"
    named = ProposerSpec(kind="aider", env=["AIDER_MODEL"], base_url="http://gw/v1")
    env = agent_environment(named, tmp_path, parent, {})
    assert env["AIDER_MODEL"] == "gpt-3" and env["OPENAI_API_BASE"] == "http://gw/v1"
    assert "OPENAI_API_KEY" not in env  # none in the parent: none made up
    options = codex_config(ProposerSpec(kind="codex", base_url="http://gw/v1", retries=0))
    assert 'model_providers.ratchet.base_url="http://gw/v1"' in options
    assert 'model_providers.ratchet.env_key="OPENAI_API_KEY"' in options
    assert "model_providers.ratchet.request_max_retries=0" in options
