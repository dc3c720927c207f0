"""`kind = "claude-code" | "codex" | "aider"`: a coding agent's own CLI, run headless.

The real program runs once per experiment in the slot worktree, through the proposer's
sandbox, with a home of its own for the proposal (`agent_setup`: its command line, its
environment, the endpoint and key from the spec) and the directive, the brief and the
scope in its prompt: Claude Code in print mode with JSON output, `codex exec` with JSON
events, aider with a message file, auto-confirm and no commits. Its stdout goes to a
file beside the change, read (without following a link, up to 32 MiB) and removed before
the change is collected; the prompt file aider reads is written without writing through
a link. Rationale, tokens and cost come from what each CLI reports (`agent_reports`);
whatever it edited is the proposal, and the engine checks its scope afterwards. Under
bwrap its network is its endpoint only (`agent_network`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ratchet.brief import fit_brief
from ratchet.errors import UsageError
from ratchet.measure import format_seconds
from ratchet.proposers.agent_network import check_endpoint, endpoint_only
from ratchet.proposers.agent_reports import (
    Reply,
    Unreadable,
    parse_aider,
    parse_claude,
    parse_codex,
    telling_line,
)
from ratchet.proposers.agent_setup import (
    PROGRAMS,
    PROMPT_FILE,
    agent_argv,
    agent_environment,
    private_home,
    remove_home,
    setup_command,
)
from ratchet.proposers.base import Cost, Outcome, Proposal, ProposalError, ProposerContext
from ratchet.safeio import Refused, read_capped, remove_entry, write_file
from ratchet.sandbox import Sandbox, pidfile_for
from ratchet.specmodel import ProposerSpec, matching

OUTPUT_FILE = ".ratchet-agent-output"  # the CLI's stdout, whole (the sandbox caps output)
MAX_DIRECTIVE = 30_000  # characters; the prompt travels on one command line (128 KiB)
MAX_BRIEF = 40_000
MAX_RATIONALE = 2000
CONTAINER_HOME = Path("/tmp/ratchet-agent-home")  # under docker: gone with the container
MAX_OUTPUT_BYTES = 32 << 20  # of the CLI's stdout: a long codex session's events fit
INSTRUCTIONS = """You improve a program inside a loop that measures every change you make;
the loop, not you, measures the change and decides whether it is kept. Make one focused
change to the editable files only (a change to any other file throws the whole proposal
away). Do not run the metric, do not commit, do not repeat an idea the history shows was
already tried and discarded."""
CLOSING = 'End your reply with one line: "Rationale: <what you changed and why>".'


class AgentCLIProposer:
    def __init__(self, context: ProposerContext) -> None:
        self.spec = context.spec.proposer
        self.kind = self.spec.kind
        self.name: str = self.kind
        self.scope, self.files = context.spec.scope, context.files
        self.sandbox, self.grace = context.sandbox, context.spec.metric.grace
        self.state_dir = context.state_dir
        self.program = self._find_program(context.project)
        check_endpoint(self.spec)

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
        if self.sandbox.name == "docker":  # the container's root is read-only, its /tmp its own
            return self._run(worktree, brief_path, prompt, CONTAINER_HOME)
        home = private_home(self.state_dir)
        try:
            return self._run(worktree, brief_path, prompt, home)
        finally:
            remove_home(home)

    def _run(self, worktree: Path, brief_path: Path, prompt: str, home: Path) -> Proposal:
        with endpoint_only(self.sandbox, self.spec) as (sandbox, spec, wrap, network):
            proposal = self._run_in(sandbox, spec, wrap, worktree, brief_path, prompt, home)
        proposal.meta["network"] = network
        return proposal

    def _run_in(
        self, sandbox: Sandbox, spec: ProposerSpec, wrap: Callable[[str], str], worktree: Path,
        brief_path: Path, prompt: str, home: Path,
    ) -> Proposal:  # fmt: skip
        editable = matching(self.files, self.scope.editable)
        kept = set(editable)
        context = [f for f in matching(self.files, self.scope.context) if f not in kept]
        argv = agent_argv(spec, self.program, worktree, prompt, editable, context, home)
        command = setup_command(spec, argv, home) + f" >{OUTPUT_FILE}"
        if self.kind == "codex":
            command += " </dev/null"  # it waits for stdin otherwise
        env = agent_environment(spec, home, os.environ, {"RATCHET_BRIEF": str(brief_path)})
        start = time.monotonic()
        program = PROGRAMS[self.kind][0]
        try:
            remove_entry(worktree / OUTPUT_FILE)  # the shell's `>` would write through a link
            if self.kind == "aider":
                write_file(worktree, PROMPT_FILE, prompt.encode())
            result = sandbox.run(
                wrap(command), worktree, env, self.spec.budget, self.grace, pidfile_for(worktree)
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
            last = telling_line(result.output) or telling_line(stdout) or "no output"
            raise ProposalError(f"{program} exited with code {result.returncode}: {last[:200]}")
        usd = reply.usd if reply.usd is not None else self._price(reply)
        cost = Cost(seconds, reply.tokens_in + reply.tokens_out, usd)
        meta = {"session": reply.session} if reply.session else {}
        return Proposal(reply.rationale[:MAX_RATIONALE] or "(no rationale)", cost, meta)

    def observe(self, outcome: Outcome) -> None:
        """Every proposal starts a fresh session: its memory is the brief's history."""

    def _prompt(self, brief_path: Path) -> str:
        brief = json.loads(brief_path.read_text())
        directive = str(brief.pop("directive", "") or "").strip()[:MAX_DIRECTIVE]
        editable = matching(self.files, self.scope.editable)
        return "\n\n".join([
            INSTRUCTIONS,
            f"Directive:\n{directive or '(none: improve the metric)'}",
            f"Editable files: {', '.join(editable or self.scope.editable)}",
            *[f"In {path}, {rule}." for path, rule in self.scope.describe_regions().items()],
            f"The brief (the metric, the incumbent, earlier experiments with each decision's "
            f"why, recent failures), as JSON:\n{fit_brief(brief, MAX_BRIEF)}",
            CLOSING,
        ])  # fmt: skip

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
        for entry in worktree.glob(".aider*"):  # a tag cache, history a user's args moved here
            if entry.name not in tracked:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _parse(self, stdout: str) -> Reply:
        if self.kind == "claude-code":
            return parse_claude(stdout)
        if self.kind == "codex":
            return parse_codex(stdout)
        return parse_aider(stdout)

    def _price(self, reply: Reply) -> float:
        price = self.spec.prices.get(self.spec.model or "", {})
        spent = reply.tokens_in * price.get("input", 0) + reply.tokens_out * price.get("output", 0)
        return spent / 1e6
