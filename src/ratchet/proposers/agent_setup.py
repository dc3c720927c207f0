"""How each coding-agent CLI is started: its command line, its environment, its private home.

Every proposal gets a home of its own, made fresh under the run's state folder and
removed afterwards: `HOME`, the XDG folders, `TMPDIR`, `CLAUDE_CONFIG_DIR` and
`CODEX_HOME` all point into it, so no user configuration, history or credentials are
read and what the CLI writes for itself (sessions, caches, logs) goes nowhere that
lasts. It is not under /tmp because codex refuses to set up its own sandbox helper
there. The parent's variables that configure these CLIs (`ANTHROPIC_*`, `OPENAI_*`,
`CODEX_*`, `AIDER_*`, ...) are dropped unless `[proposer] env` names them; telemetry,
error reports and update checks are turned off by each CLI's own switch.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ratchet.environment import is_secret_name
from ratchet.specmodel import ProposerSpec

PROGRAMS = {"claude-code": ("claude", "Claude Code"), "codex": ("codex", "Codex CLI"),
            "aider": ("aider", "aider")}  # fmt: skip
KEY_VARIABLES = {"claude-code": "ANTHROPIC_API_KEY", "codex": "OPENAI_API_KEY",
                 "aider": "OPENAI_API_KEY"}  # fmt: skip
PROMPT_FILE = ".ratchet-agent-prompt"  # aider's message file, in the worktree
HOMES_DIR = "agent-homes"  # under the run's state folder
PROVIDER = "ratchet"  # the name of the model provider codex is given
# variables a user's shell may hold that would configure a CLI behind the spec's back
CONFIGURING = ("ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "AIDER_", "LITELLM_", "AZURE_",
               "GEMINI_", "AWS_", "GOOGLE_", "VERTEX", "HTTP_PROXY", "HTTPS_PROXY",
               "ALL_PROXY", "NODE_OPTIONS", "XDG_")  # fmt: skip
QUIET = {
    "claude-code": {
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_BUG_COMMAND": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    },
    "codex": {},  # its switches are `-c` options, on the command line
    # litellm fetches its price map over the network at import otherwise
    # and COLUMNS keeps its printer from wrapping the lines ratchet reads
    "aider": {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "AIDER_ANALYTICS": "false",
              "COLUMNS": "4096"},
}  # fmt: skip
# aider downloads litellm's price list from GitHub unless its cache holds one less than a
# day old; a placeholder sends it to the copy litellm ships instead
AIDER_PRICE_CACHE = (".aider/caches/model_prices_and_context_window.json", '{"-": {}}')


def private_home(state_dir: Path) -> Path:
    """A fresh folder for one proposal's `HOME`; `remove_home` deletes it."""
    base = state_dir / HOMES_DIR
    while True:  # another slot's `remove_home` may remove `base` between the two steps
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            home = Path(tempfile.mkdtemp(prefix="home-", dir=base))
            break
        except FileNotFoundError:
            continue
    for sub in _folders(home).values():
        Path(sub).mkdir(parents=True, exist_ok=True)
    return home


def remove_home(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    with contextlib.suppress(OSError):  # another slot's home is still there
        home.parent.rmdir()


def _folders(home: Path) -> dict[str, str]:
    return {
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TMPDIR": str(home / "tmp"),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CODEX_HOME": str(home / ".codex"),
    }


def key_variable(spec: ProposerSpec) -> str:
    """The variable the CLI reads its API key from."""
    return KEY_VARIABLES[spec.kind]


def agent_environment(
    spec: ProposerSpec, home: Path, parent: Mapping[str, str], extra: Mapping[str, str]
) -> dict[str, str]:
    """The CLI's environment: the parent's without secrets or CLI configuration (except
    what `[proposer] env` names), the API key, the private home, the quiet switches."""
    named = set(spec.env)
    key = key_variable(spec)
    source = spec.api_key_env or key
    env = {
        k: v
        for k, v in parent.items()
        if k in named or not (is_secret_name(k) or k.upper().startswith(CONFIGURING))
    }
    if source in parent:
        env[key] = parent[source]  # `api_key_env` names where the key is; the CLI wants it here
    env.update({"HOME": str(home), **_folders(home), **QUIET[spec.kind], **extra})
    if spec.kind == "claude-code":
        env["CLAUDE_CODE_MAX_RETRIES"] = str(spec.retries)
        env["API_TIMEOUT_MS"] = str(int(spec.request_timeout * 1000))
        if spec.base_url:
            env["ANTHROPIC_BASE_URL"] = spec.base_url
    if spec.kind == "aider" and spec.base_url:
        env["OPENAI_API_BASE"] = spec.base_url
    return env


def agent_argv(
    spec: ProposerSpec, program: str, worktree: Path, prompt: str, editable: list[str],
    context: list[str], home: Path,
) -> list[str]:  # fmt: skip
    """The command line for one proposal; the user's `args` come after ratchet's."""
    model = spec.model
    if spec.kind == "claude-code":
        argv = [program, "-p", prompt, "--output-format", "json",
                "--permission-mode", "acceptEdits", "--allowedTools", "Read,Grep,Glob,Edit",
                "--max-turns", str(spec.max_turns)]  # fmt: skip
        return argv + (["--model", model] if model else []) + spec.args
    if spec.kind == "codex":
        return [program, "exec", "--sandbox", "workspace-write", "-C", str(worktree),
                "--skip-git-repo-check", "--json", *codex_config(spec),
                *(["-m", model] if model else []), *spec.args, prompt]  # fmt: skip
    # --no-git: ratchet owns the repository (aider would write a `[user]` into the shared
    # .git/config, and commit); the editable files are named, so it needs no repo map
    argv = [program, "--message-file", PROMPT_FILE, "--yes-always", "--no-git",
            "--no-auto-commits", "--no-dirty-commits", "--no-gitignore", "--no-stream", "--no-pretty",
            "--no-check-update", "--analytics-disable", "--no-show-release-notes",
            "--no-restore-chat-history",
            "--input-history-file", str(home / "aider.input.history"),
            "--chat-history-file", str(home / "aider.chat.history.md")]  # fmt: skip
    argv += (["--model", model] if model else []) + spec.args + editable
    for path in context:
        argv += ["--read", path]
    return argv


def codex_config(spec: ProposerSpec) -> list[str]:
    """codex's `-c` overrides: a model provider of ratchet's own (the spec's endpoint,
    the key's variable, its retries and request timeout), writes only in the worktree,
    no analytics, no update check."""
    base_url = spec.base_url or "https://api.openai.com/v1"
    settings: dict[str, str | int | bool] = {
        "model_provider": PROVIDER,
        f"model_providers.{PROVIDER}.name": PROVIDER,
        f"model_providers.{PROVIDER}.base_url": base_url,
        f"model_providers.{PROVIDER}.env_key": key_variable(spec),
        f"model_providers.{PROVIDER}.wire_api": "responses",
        f"model_providers.{PROVIDER}.request_max_retries": spec.retries,
        f"model_providers.{PROVIDER}.stream_max_retries": spec.retries,
        f"model_providers.{PROVIDER}.stream_idle_timeout_ms": int(spec.request_timeout * 1000),
        "sandbox_workspace_write.exclude_slash_tmp": True,
        "analytics.enabled": False,
        "check_for_update_on_startup": False,
    }
    argv: list[str] = []
    for name, value in settings.items():
        text = json.dumps(value)  # TOML's strings, integers and booleans read the same
        argv += ["-c", f"{name}={text}"]
    return argv


def setup_command(spec: ProposerSpec, argv: list[str], home: Path) -> str:
    """The shell line: the private folders made first, inside the sandbox (which may show
    an empty tmpfs where `home` is), then the CLI."""
    folders = [str(home), *_folders(home).values()]
    line = f"mkdir -p {shlex.join(folders)} && "
    if spec.kind == "aider":
        cache = home / AIDER_PRICE_CACHE[0]
        line += f"mkdir -p {shlex.quote(str(cache.parent))} && "
        line += f"printf %s {shlex.quote(AIDER_PRICE_CACHE[1])} >{shlex.quote(str(cache))} && "
    return line + f"exec {shlex.join(argv)}"
