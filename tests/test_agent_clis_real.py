"""The agent CLI proposers with the real `claude`, `codex` and `aider` programs.

Each CLI talks to a loopback server of tests/fake_agent_servers.py in its own protocol,
which replays a script: read the target file, edit it with the CLI's own edit tool
(Claude Code's `Read` and `Edit`; codex's `exec_command` running its `apply_patch`;
aider's SEARCH/REPLACE reply, which aider applies), finish with a rationale. A full
`ratchet run` then keeps the CLI's edit, with the tokens and cost the CLI reported.

The programs are installed by .ci/run; a test skips, saying which program and how to
install it, only where one is missing. `RATCHET_AGENT_BIN_DIR` (claude and codex) and
`RATCHET_AIDER_BIN_DIR` (aider) point at other installs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_agent_servers import (
    TOKENS_IN,
    TOKENS_OUT,
    AgentServer,
    Fail,
    Garbled,
    Script,
    Stall,
    Turn,
    tool_results,
    working_folder,
)

from conftest import experiments, git, layer_or_skip, make_project, ratchet

NODE_BIN = Path(os.environ.get("RATCHET_AGENT_BIN_DIR", "/opt/ratchet-agents/node_modules/.bin"))
AIDER_BIN = Path(os.environ.get("RATCHET_AIDER_BIN_DIR", "/opt/aider/bin"))
INSTALL = {
    "claude": "npm install --prefix /opt/ratchet-agents @anthropic-ai/claude-code@2.1.332",
    "codex": "npm install --prefix /opt/ratchet-agents @openai/codex@0.171.0",
    "aider": "python3.11 -m venv /opt/aider && /opt/aider/bin/pip install aider-chat==0.86.2",
}
KEY = "sk-ratchet-test-0123456789"
ONE_RETRY = "retries = 1"
AUTH_FAILED = {
    "claude-code": "claude reported an error: Failed to authenticate. API Error: 401 Invalid "
    "API key: ratchet-test",
    "codex": "codex reported an error: unexpected status 401 Unauthorized: Invalid API key: "
    "ratchet-test, url: http://127.0.0.1:",
    "aider": "aider reported an error: litellm.AuthenticationError: AuthenticationError: "
    "OpenAIException - Invalid API key: ratchet-test The API provider is not able to "
    "authenticate you.",
}  # the CLI's own retries, for fast failures

SPEC = """
[sandbox]
kind = "{sandbox}"
[scope]
editable = ["value.py"]
context = ["score.py"]
protected = ["score.py"]
directive = "program.md"
[metric]
command = "{python} score.py"
name = "score"
grace = "0.5s"
[run]
max_experiments = {experiments}
[proposer]
kind = "{kind}"
model = "{model}"
base_url = "{base_url}"
budget = "{budget}"
max_turns = 6
{extra}
"""
FILES = {
    "value.py": "X = 5\n",
    "score.py": "from value import X\nprint(f'score: {(X - 2) ** 2}')\n",
    "program.md": "Push X toward the minimum of the score.\n",
}
MODELS = {"claude-code": "claude-sonnet-4-5", "codex": "gpt-5-codex", "aider": "openai/gpt-4o"}
CODEX_PRICES = '[proposer.prices]\n"gpt-5-codex" = { input = 1.25, output = 10 }'
# planted in the user's HOME: read by mistake, each would send its CLI to a dead port
USER_CONFIG = {
    ".claude/settings.json": '{"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}}\n',
    ".claude.json": '{"primaryApiKey": "sk-from-the-users-home"}\n',
    ".codex/config.toml": 'model_provider = "dead"\n[model_providers.dead]\n'
    'name = "dead"\nbase_url = "http://127.0.0.1:9/v1"\n',
    ".aider.conf.yml": "openai-api-base: http://127.0.0.1:9/v1\n",
    ".config/aider/keep": "\n",
}


def binary(name: str) -> Path:
    path = (AIDER_BIN if name == "aider" else NODE_BIN) / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{name} is not installed at {path}; .ci/run installs it: {INSTALL[name]}")
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` with a digest of its content: what a write would change."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file():
            found[rel] = "dir" if path.is_dir() else "other"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


class Run:
    """A project, a user HOME with poisoned configuration, and `ratchet run` against a server."""

    def __init__(self, tmp_path: Path, kind: str, server: AgentServer) -> None:
        self.tmp_path, self.kind, self.server = tmp_path, kind, server
        self.home = tmp_path / "user-home"
        for name, text in USER_CONFIG.items():
            (self.home / name).parent.mkdir(parents=True, exist_ok=True)
            (self.home / name).write_text(text)
        self.before = snapshot(self.home)

    def __call__(
        self, experiments_: int = 1, budget: str = "90s", extra: str = "", sandbox: str = "process"
    ) -> tuple[Path, list[dict[str, Any]]]:
        program = binary({"claude-code": "claude"}.get(self.kind, self.kind))
        base_url = self.server.url + ("" if self.kind == "claude-code" else "/v1")
        spec = SPEC.format(sandbox=sandbox, python=sys.executable, experiments=experiments_,
                           kind=self.kind, model=MODELS[self.kind], base_url=base_url,
                           budget=budget, extra=extra)  # fmt: skip
        project = make_project(self.tmp_path / "project", FILES, spec)
        self.git_before = self.git_snapshot(project)
        env = {
            "PATH": f"{program.parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.home),
            "ANTHROPIC_API_KEY": KEY,
            "OPENAI_API_KEY": KEY,
            # the user's shell pointing the CLIs elsewhere: dropped, the spec's endpoint wins
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "OPENAI_API_BASE": "http://127.0.0.1:9/v1",
        }
        result = ratchet(project, "run", env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        return project, [r for r in experiments(project) if r["proposer"] == self.kind]

    @staticmethod
    def git_snapshot(project: Path) -> dict[str, str]:
        """The shared repository's configuration and hooks: what runs code at the next git."""
        found = snapshot(project / ".git" / "hooks")
        found["config"] = (project / ".git" / "config").read_text()
        return found

    def check_nothing_written_outside(self, project: Path) -> None:
        assert snapshot(self.home) == self.before, "the CLI wrote in (or changed) the user's HOME"
        assert self.git_snapshot(project) == self.git_before, "the CLI changed .git/"
        slots = project / ".ratchet" / "slots"
        assert sorted(p.name for p in slots.iterdir()) == ["0"]  # the slot's parent: only it
        assert not (project / ".ratchet" / "agent-homes").exists()  # the private homes: gone
        status = git(project / ".ratchet" / "slots" / "0", "status", "--porcelain", "--ignored")
        left = [line for line in status.splitlines() if line.startswith(("??", "!!"))]
        assert left == [], left  # the worktree: nothing new beside the change, ignored or not


@pytest.fixture
def agent_run(tmp_path: Path) -> Iterator[Any]:
    servers: list[AgentServer] = []

    def start(kind: str, script: Script) -> Run:
        server = AgentServer(script).__enter__()
        servers.append(server)
        return Run(tmp_path, kind, server)

    yield start
    for server in servers:
        server.__exit__()


# the scripts: read value.py, edit it with the CLI's own tool, give a rationale ----------
RATIONALE = "Rationale: X = 2 is the minimum of (X - 2)^2"


def claude_script() -> Script:
    def read(body: dict[str, Any]) -> Turn:
        return Turn("Reading it.", [("Read", {"file_path": f"{working_folder(body)}/value.py"})])

    def edit(body: dict[str, Any]) -> Turn:
        assert "X = 5" in tool_results(body)[-1]  # what its Read returned
        path = f"{working_folder(body)}/value.py"
        return Turn("", [("Edit", {"file_path": path, "old_string": "X = 5",
                                   "new_string": "X = 2"})])  # fmt: skip

    return [read, edit, Turn(f"Set X to 2.\n{RATIONALE}")]


PATCH = "*** Begin Patch\n*** Update File: value.py\n@@\n-X = 5\n+X = 2\n*** End Patch\n"


def codex_script() -> Script:
    def patch(body: dict[str, Any]) -> Turn:
        assert "X = 5" in tool_results(body)[-1]  # what `cat` printed
        return Turn("", [("exec_command", {"cmd": f"apply_patch <<'EOF'\n{PATCH}EOF\n"})])

    return [Turn("", [("exec_command", {"cmd": "cat value.py"})]), patch,
            Turn(f"Patched value.py.\n{RATIONALE}")]  # fmt: skip


AIDER_REPLY = f"""I will move X to the optimum.

value.py
```python
<<<<<<< SEARCH
X = 5
=======
X = 2
>>>>>>> REPLACE
```

{RATIONALE}
"""


def aider_script() -> Script:
    def reply(body: dict[str, Any]) -> Turn:
        assert "X = 5" in json.dumps(body["messages"])  # aider sent the file's content
        return Turn(AIDER_REPLY)

    return [reply]


def check_kept(project: Path, row: dict[str, Any]) -> None:
    assert row["decision"] == "keep", row["why"]
    assert row["rationale"] == RATIONALE.removeprefix("Rationale: ")
    assert json.loads(row["files"]) == ["value.py"]
    assert git(project, "show", "ratchet/default:value.py") == "X = 2"


# end to end -------------------------------------------------------------------------------
@pytest.mark.parametrize("sandbox", ["process", "bwrap"])
def test_claude_code_keeps_the_edit_its_edit_tool_made(agent_run: Any, sandbox: str) -> None:
    if sandbox == "bwrap":
        layer_or_skip("bwrap")
    run = agent_run("claude-code", claude_script())
    project, [row] = run(sandbox=sandbox)
    check_kept(project, row)
    turns = run.server.turn_requests()
    assert len(turns) == 3 and all(r.path == "/v1/messages?beta=true" for r in turns)
    prompt = json.dumps(turns[0].body["messages"])
    assert "Push X toward the minimum of the score." in prompt  # the directive
    assert "Editable files: value.py" in prompt and "Rationale:" in prompt
    assert turns[0].headers["x-api-key"] == "***"  # the key was sent (masked in the log)
    # its own report: 3 turns at claude-sonnet-4-5's $3 / $15 per million tokens
    assert row["cost_tokens"] == 3 * (TOKENS_IN + TOKENS_OUT)
    assert row["cost_usd"] == pytest.approx(3 * (TOKENS_IN * 3 + TOKENS_OUT * 15) / 1e6)
    # under bwrap it had no network but a forwarder to the server (tests/test_agent_network.py)
    port = run.server.server.server_address[1]
    network = f"only 127.0.0.1:{port}" if sandbox == "bwrap" else "the host's network"
    assert json.loads(row["meta"])["network"].startswith(network)
    run.check_nothing_written_outside(project)


def test_codex_keeps_the_patch_its_apply_patch_made(agent_run: Any) -> None:
    run = agent_run("codex", codex_script())
    project, [row] = run(extra=CODEX_PRICES)
    check_kept(project, row)
    turns = run.server.turn_requests()
    assert len(turns) == 3 and all(r.path == "/v1/responses" for r in turns)
    assert "exec_command" in [t.get("name") for t in turns[0].body["tools"]]
    assert row["cost_tokens"] == 3 * (TOKENS_IN + TOKENS_OUT)  # from its turn.completed
    assert row["cost_usd"] == pytest.approx(3 * (TOKENS_IN * 1.25 + TOKENS_OUT * 10) / 1e6)
    assert json.loads(row["meta"])["session"]  # its thread id
    run.check_nothing_written_outside(project)


def test_aider_under_bwrap_keeps_its_edit_with_only_its_endpoint_in_reach(
    agent_run: Any,
) -> None:
    """aider (Python, litellm, the openai SDK) through the forwarder of
    tests/test_agent_network.py: no network of its own, the server's port relayed."""
    layer_or_skip("bwrap")
    run = agent_run("aider", aider_script())
    project, [row] = run(sandbox="bwrap", extra="args = ['--map-tokens', '0']")
    check_kept(project, row)
    port = run.server.server.server_address[1]
    assert json.loads(row["meta"])["network"] == f"only 127.0.0.1:{port}"
    run.check_nothing_written_outside(project)


def test_aider_keeps_the_edit_it_applied_after_an_authentication_failure(
    agent_run: Any,
) -> None:
    # one run, two experiments: aider starts slowly, so its failure and its success share it
    run = agent_run("aider", [Fail(401, "Invalid API key: ratchet-test"), *aider_script()])
    project, [failed, row] = run(experiments_=2, extra="args = ['--map-tokens', '0']")
    assert failed["decision"] == "invalid-proposal"
    assert failed["why"].startswith(AUTH_FAILED["aider"]), failed["why"]  # its own words
    check_kept(project, row)
    _, second = run.server.turn_requests()
    assert second.path == "/v1/chat/completions" and second.body["model"] == "gpt-4o"
    # its "Tokens: 1.0k sent, 50 received. Cost: $0.0030 message, $0.0030 session." line
    assert row["cost_tokens"] == TOKENS_IN + TOKENS_OUT
    assert row["cost_usd"] == pytest.approx((TOKENS_IN * 2.5 + TOKENS_OUT * 10) / 1e6)
    run.check_nothing_written_outside(project)


# failures: each an invalid proposal with the CLI's own message ------------------------------
@pytest.mark.parametrize("kind", ["claude-code", "codex"])  # aider's: with its keep, above
def test_an_authentication_failure_is_an_invalid_proposal(agent_run: Any, kind: str) -> None:
    run = agent_run(kind, [Fail(401, "Invalid API key: ratchet-test")] * 10)
    project, [row] = run(extra=ONE_RETRY)
    assert row["decision"] == "invalid-proposal"
    assert row["why"].startswith(AUTH_FAILED[kind]), row["why"]  # the CLI's own words
    assert git(project, "show", "ratchet/default:value.py") == "X = 5"
    run.check_nothing_written_outside(project)


def test_a_hung_cli_is_killed_at_the_budget_and_the_loop_goes_on(agent_run: Any) -> None:
    run = agent_run("claude-code", [Stall(), Turn(f"Nothing to change.\n{RATIONALE}")])
    project, rows = run(experiments_=2, budget="10s")
    assert rows[0]["decision"] == "invalid-proposal"
    assert rows[0]["why"] == "claude ran past the proposal's 10s budget and was killed"
    assert len(run.server.turn_requests()) == 2  # the first hung on the server, not before
    assert rows[1]["decision"] == "no-change"  # the next proposal, answered
    assert rows[1]["rationale"] == RATIONALE.removeprefix("Rationale: ")
    run.check_nothing_written_outside(project)


def test_a_storm_of_server_errors_is_an_invalid_proposal(agent_run: Any) -> None:
    run = agent_run("codex", [Fail(503, "upstream overloaded")] * 30)
    _, [row] = run(extra=ONE_RETRY)
    assert row["decision"] == "invalid-proposal"
    assert row["why"].startswith(
        "codex reported an error: unexpected status 503 Service Unavailable: upstream overloaded"
    ), row["why"]
    assert 2 <= len(run.server.turn_requests()) <= 4  # `retries = 1` reached codex


def test_a_malformed_stream_is_an_invalid_proposal(agent_run: Any) -> None:
    run = agent_run("claude-code", [Garbled()] * 30)
    _, [row] = run(extra=ONE_RETRY)
    assert row["decision"] == "invalid-proposal"
    assert row["why"].startswith(
        "claude reported an error: API Error: API returned an empty or malformed response"
    ), row["why"]


def test_an_edit_outside_the_scope_is_thrown_away(agent_run: Any) -> None:
    def edit(body: dict[str, Any]) -> Turn:
        path = f"{working_folder(body)}/score.py"
        return Turn("", [("Edit", {"file_path": path, "old_string": "(X - 2) ** 2",
                                   "new_string": "0"})])  # fmt: skip

    def read(body: dict[str, Any]) -> Turn:
        return Turn("", [("Read", {"file_path": f"{working_folder(body)}/score.py"})])

    run = agent_run("claude-code", [read, edit, Turn(f"Done.\n{RATIONALE}")])
    project, [row] = run()
    assert row["decision"] == "out-of-scope" and "score.py" in row["why"], row["why"]
    assert git(project, "show", "ratchet/default:score.py").endswith("{(X - 2) ** 2}')")


def test_claude_code_is_refused_a_shell_and_writes_outside_the_worktree(
    agent_run: Any, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    script: Script = [
        Turn("", [("Bash", {"command": f"touch {outside}-bash", "description": "touch"})]),
        Turn("", [("Write", {"file_path": f"{outside}-write", "content": "x"})]),
        *claude_script(),
    ]
    run = agent_run("claude-code", script)
    project, [row] = run()
    check_kept(project, row)  # refused, not asked: the session went on to its edit
    refused = [tool_results(r.body)[-1] for r in run.server.turn_requests()[1:3]]
    assert "needs approval" in refused[0] and "haven't granted it" in refused[1], refused
    assert not list(tmp_path.glob("outside*"))


def test_a_cli_that_exits_with_an_error_gives_its_own_last_line(agent_run: Any) -> None:
    run = agent_run("codex", [])
    _, [row] = run(extra='args = ["--no-such-option"]')
    assert row["decision"] == "invalid-proposal"
    assert row["why"] == (
        "codex exited with code 2: error: unexpected argument '--no-such-option' found"
    ), row["why"]
    assert run.server.turn_requests() == []


# codex's own sandbox inside ratchet's bwrap ----------------------------------------------
PROBE = (
    "python3 -c 'import socket, sys; socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 2)'"
    " {port} && echo net:open || echo net:blocked; touch ../outside && echo write:outside"
    " || echo write:refused; cat value.py"
)


@pytest.mark.parametrize("sandbox", ["process", "bwrap"])
def test_codex_runs_its_own_sandbox(agent_run: Any, sandbox: str) -> None:
    """codex runs each command of its own in its sandbox (bubblewrap and seccomp on
    Linux): no network, writes only in the worktree. Inside ratchet's bwrap layer, whose
    only way out is the forwarder to the endpoint, it still does: a nested user namespace."""
    if sandbox == "bwrap":
        layer_or_skip("bwrap")
    holder: list[int] = []
    said: list[str] = []

    def probe(body: dict[str, Any]) -> Turn:
        return Turn("", [("exec_command", {"cmd": PROBE.format(port=holder[0])})])

    def patch(body: dict[str, Any]) -> Turn:
        said.append(tool_results(body)[-1])
        return Turn("", [("exec_command", {"cmd": f"apply_patch <<'EOF'\n{PATCH}EOF\n"})])

    run = agent_run("codex", [probe, patch, Turn(f"Patched value.py.\n{RATIONALE}")])
    holder.append(run.server.server.server_address[1])
    project, [row] = run(sandbox=sandbox, extra=CODEX_PRICES)
    check_kept(project, row)
    # the endpoint the CLI itself reaches is closed to codex's commands
    assert "net:blocked" in said[0] and "net:open" not in said[0], said[0]
    assert "write:refused" in said[0] and "X = 5" in said[0], said[0]
    assert not (project / ".ratchet" / "slots" / "outside").exists()
    metadata = json.loads(run.server.turn_requests()[0].headers["x-codex-turn-metadata"])
    assert metadata["sandbox_mode"] == "workspace-write"
    assert metadata["analytics_enabled"] is False  # `-c analytics.enabled=false` reached it
