"""`kind = "claude-code" | "codex" | "aider"`: a coding agent's own CLI, run headless.

The real program runs once per experiment in the slot worktree, through the proposer's
sandbox (network allowed, only the secrets `[proposer] env` names), with the directive,
the brief and the scope in its prompt: Claude Code in print mode with JSON output,
`codex exec` with JSON events, aider with a message file, auto-confirm and no commits.
Its stdout goes to a file beside the change, read (without following a link, up to
32 MiB) and removed before the change is collected; the prompt file aider reads is
written without writing through a link. Costs come from what each CLI reports; whatever it edited is the proposal,
and the engine checks its scope afterwards like any other.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratchet.brief import fit_brief
from ratchet.environment import child_environment
from ratchet.errors import UsageError
from ratchet.measure import format_seconds
from ratchet.proposers.base import Cost, Outcome, Proposal, ProposalError, ProposerContext
from ratchet.safeio import Refused, read_capped, remove_entry, write_file
from ratchet.sandbox import pidfile_for
from ratchet.spec import matches

PROGRAMS = {"claude-code": ("claude", "Claude Code"), "codex": ("codex", "Codex CLI"),
            "aider": ("aider", "aider")}  # fmt: skip
PROMPT_FILE = ".ratchet-agent-prompt"  # aider's message file, in the worktree
OUTPUT_FILE = ".ratchet-agent-output"  # the CLI's stdout, whole (the sandbox caps output)
MAX_DIRECTIVE = 30_000  # characters; the prompt travels on one command line (128 KiB)
MAX_BRIEF = 40_000
MAX_RATIONALE = 2000
MAX_OUTPUT_BYTES = 32 << 20  # of the CLI's stdout: a long codex session's events fit
MESSAGES = {"agent_message", "assistant_message"}  # codex's item types for its replies
INSTRUCTIONS = """You improve a program inside a loop that measures every change you make;
the loop, not you, measures the change and decides whether it is kept. Make one focused
change to the editable files only (a change to any other file throws the whole proposal
away). Do not run the metric, do not commit, do not repeat an idea the history shows was
already tried and discarded."""
CLOSING = 'End your reply with one line: "Rationale: <what you changed and why>".'
_RATIONALE = re.compile(r"^[\s*_#>-]*rationale\s*[:*_]+\s*(.+?)[\s*_]*$", re.IGNORECASE)
_COUNT = r"\d[\d.]*[kKmM]?"
_AIDER_TOKENS = re.compile(
    rf"Tokens: (?P<sent>{_COUNT}) sent(?:, {_COUNT} cache \w+)*, (?P<received>{_COUNT}) "
    r"received\.(?: Cost: \$(?P<message>\d[\d.]*) message, \$(?P<session>\d[\d.]*) session\.)?"
)
_AIDER_APPLIED = re.compile(r"^Applied edit to (.+)$", re.MULTILINE)


class Unreadable(ProposalError):
    """The CLI printed nothing this proposer can read."""


@dataclass(frozen=True)
class Reply:
    """What a CLI's output says: the rationale, the tokens and, when it reports it, the cost."""

    rationale: str
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float | None = None
    session: str | None = None


class AgentCLIProposer:
    def __init__(self, context: ProposerContext) -> None:
        self.spec = context.spec.proposer
        self.kind = self.spec.kind
        self.name: str = self.kind
        self.scope, self.files = context.spec.scope, context.files
        self.sandbox, self.grace = context.sandbox, context.spec.metric.grace
        self.program = self._find_program(context.project)

    def _find_program(self, project: Path) -> str:
        name, label = PROGRAMS[self.kind]
        given = self.spec.executable or name
        if "/" in given:
            path = project / Path(given).expanduser()  # an absolute path stays as it is
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise UsageError(f"[proposer] executable: {given} is not an executable file")
            return str(path)
        if self.sandbox.name != "docker" and shutil.which(given) is None:  # docker: its image's
            raise UsageError(
                f"{given} not found on PATH; install {label} or set [proposer] executable"
            )
        return given

    def propose(self, worktree: Path, brief_path: Path) -> Proposal:
        prompt = self._prompt(brief_path)
        command = shlex.join(self._argv(worktree, prompt)) + f" >{OUTPUT_FILE}"
        if self.kind == "codex":
            command += " </dev/null"  # it waits for stdin otherwise
        env = child_environment(allow=self.spec.env, extra={"RATCHET_BRIEF": str(brief_path)})
        start = time.monotonic()
        program = PROGRAMS[self.kind][0]
        try:
            remove_entry(worktree / OUTPUT_FILE)  # the shell's `>` would write through a link
            if self.kind == "aider":
                write_file(worktree, PROMPT_FILE, prompt.encode())
            result = self.sandbox.run(
                command, worktree, env, self.spec.budget, self.grace, pidfile_for(worktree)
            )
            stdout = self._output(worktree)
        except Refused as why:
            raise ProposalError(f"{program}'s files: {why}") from None
        finally:
            self._clean(worktree)
        seconds = time.monotonic() - start
        if result.timed_out:
            raise ProposalError(f"{program} ran past the proposal's "
                                f"{format_seconds(self.spec.budget)} budget and was killed")  # fmt: skip
        failed = result.returncode != 0
        try:
            reply: Reply | None = self._parse(stdout)
        except Unreadable:  # an error the CLI reported goes on as it is
            if not failed:
                raise
            reply = None
        if failed or reply is None:
            last = _last_line(result.output) or _last_line(stdout) or "no output"
            raise ProposalError(f"{program} exited with code {result.returncode}: {last[:200]}")
        usd = reply.usd if reply.usd is not None else self._price(reply)
        cost = Cost(seconds, reply.tokens_in + reply.tokens_out, usd)
        meta = {"session": reply.session} if reply.session else {}
        return Proposal(reply.rationale[:MAX_RATIONALE] or "(no rationale)", cost, meta)

    def observe(self, outcome: Outcome) -> None:
        """Every proposal starts a fresh session: its memory is the brief's history."""

    # the command line ---------------------------------------------------------------
    def _prompt(self, brief_path: Path) -> str:
        brief = json.loads(brief_path.read_text())
        directive = str(brief.pop("directive", "") or "").strip()[:MAX_DIRECTIVE]
        editable = [f for f in self.files if matches(f, self.scope.editable)]
        return "\n\n".join([
            INSTRUCTIONS,
            f"Directive:\n{directive or '(none: improve the metric)'}",
            f"Editable files: {', '.join(editable or self.scope.editable)}",
            *[f"In {path}, {rule}." for path, rule in self.scope.describe_regions().items()],
            f"The brief (the metric, the incumbent, earlier experiments with each decision's "
            f"why, recent failures), as JSON:\n{fit_brief(brief, MAX_BRIEF)}",
            CLOSING,
        ])  # fmt: skip

    def _argv(self, worktree: Path, prompt: str) -> list[str]:
        spec, model = self.spec, self.spec.model
        if self.kind == "claude-code":
            argv = [self.program, "-p", prompt, "--output-format", "json",
                    "--permission-mode", "acceptEdits", "--allowedTools", "Read,Grep,Glob,Edit",
                    "--max-turns", str(spec.max_turns)]  # fmt: skip
            return argv + (["--model", model] if model else []) + spec.args
        if self.kind == "codex":
            argv = [self.program, "exec", "--sandbox", "workspace-write", "-C", str(worktree),
                    "--skip-git-repo-check", "--json"]  # fmt: skip
            return argv + (["-m", model] if model else []) + spec.args + [prompt]
        argv = [self.program, "--message-file", PROMPT_FILE, "--yes-always", "--no-auto-commits",
                "--no-dirty-commits", "--no-gitignore", "--no-stream", "--no-pretty",
                "--no-check-update", "--analytics-disable"]  # fmt: skip
        argv += (["--model", model] if model else []) + spec.args
        argv += [f for f in self.files if matches(f, self.scope.editable)]
        for path in self.files:
            if matches(path, self.scope.context) and not matches(path, self.scope.editable):
                argv += ["--read", path]
        return argv

    def _output(self, worktree: Path) -> str:
        """What the CLI printed, from a file it could have swapped for a link."""
        try:
            data = read_capped(worktree, OUTPUT_FILE, MAX_OUTPUT_BYTES)
        except FileNotFoundError:
            return ""
        return data.decode(errors="replace")

    def _clean(self, worktree: Path) -> None:
        """Remove what the run left that is not the proposal: ratchet's files, aider's own."""
        remove_entry(worktree / PROMPT_FILE)
        remove_entry(worktree / OUTPUT_FILE)
        if self.kind != "aider":
            return
        tracked = {f.split("/", 1)[0] for f in self.files}
        for entry in worktree.glob(".aider*"):  # chat history, tag cache
            if entry.name not in tracked:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    # reading the output -------------------------------------------------------------
    def _parse(self, stdout: str) -> Reply:
        if self.kind == "claude-code":
            return _parse_claude(stdout)
        if self.kind == "codex":
            return _parse_codex(stdout)
        return _parse_aider(stdout)

    def _price(self, reply: Reply) -> float:
        price = self.spec.prices.get(self.spec.model or "", {})
        spent = reply.tokens_in * price.get("input", 0) + reply.tokens_out * price.get("output", 0)
        return spent / 1e6


def _parse_claude(stdout: str) -> Reply:
    whole = _json_lines(stdout.strip().replace("\n", " "))  # printed pretty, perhaps
    found = [
        d for d in [*whole, *reversed(_json_lines(stdout))] if "result" in d or "is_error" in d
    ]
    if not found:
        raise Unreadable(f"claude printed no JSON result: {_last_line(stdout) or 'no output'}")
    data = found[0]
    text = str(data.get("result") or "")
    if data.get("is_error") or str(data.get("subtype", "")).startswith("error"):
        reason = text or str(data.get("subtype") or "no reason given")
        raise ProposalError(f"claude reported an error: {reason[:500]}")
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    tokens_in = sum(_count(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens",
                                                   "cache_read_input_tokens"))  # fmt: skip
    cost = data.get("total_cost_usd", data.get("cost_usd"))
    usd = float(cost) if isinstance(cost, int | float) and cost >= 0 else None
    session = data.get("session_id")
    return Reply(_rationale(text), tokens_in, _count(usage.get("output_tokens")), usd,
                 str(session) if session else None)  # fmt: skip


def _parse_codex(stdout: str) -> Reply:
    events = _json_lines(stdout)
    if not any("type" in e for e in events):
        raise Unreadable(f"codex printed no JSON events: {_last_line(stdout) or 'no output'}")
    tokens_in = tokens_out = 0
    text, session = "", None
    for event in events:
        kind, item = event.get("type"), event.get("item")
        if kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            raise ProposalError(f"codex reported an error: {str(message)[:500]}")
        if kind == "turn.completed" and isinstance(event.get("usage"), dict):
            tokens_in += _count(event["usage"].get("input_tokens"))
            tokens_out += _count(event["usage"].get("output_tokens"))
        if kind == "item.completed" and isinstance(item, dict) and item.get("type") in MESSAGES:
            text = str(item.get("text") or "")
        if kind == "thread.started":
            session = str(event.get("thread_id") or "") or None
    return Reply(_rationale(text), tokens_in, tokens_out, None, session)


def _parse_aider(stdout: str) -> Reply:
    reports = list(_AIDER_TOKENS.finditer(stdout))
    tokens_in = sum(_tokens(m["sent"]) for m in reports)
    tokens_out = sum(_tokens(m["received"]) for m in reports)
    sessions = [float(m["session"]) for m in reports if m["session"]]
    rationale = _rationale(stdout, fallback=False)
    if not rationale:
        edited = sorted(set(_AIDER_APPLIED.findall(stdout)))
        rationale = f"aider edited {', '.join(edited)}" if edited else ""
    return Reply(rationale, tokens_in, tokens_out, sessions[-1] if sessions else None)


def _json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of `text`, in order."""
    found = []
    for line in text.splitlines():
        if line.strip().startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                found.append(data)
    return found


def _rationale(text: str, fallback: bool = True) -> str:
    """The last `Rationale: ...` line, or else the last line of the agent's reply."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if found := _RATIONALE.match(line):
            return found.group(1).strip()
    return lines[-1] if lines and fallback else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _count(raw: object) -> int:
    return int(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0 else 0


def _tokens(text: str) -> int:
    """aider's token counts: `950`, `2.3k`, `12k`, `1.5M`."""
    scale = {"k": 1e3, "m": 1e6}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmM")) * scale)
