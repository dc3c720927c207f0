"""`kind = "command"`: any program, run in the slot worktree, is the proposer.

It reads the brief at `$RATCHET_BRIEF`, edits files, and may write its rationale (plain
text, or a JSON object with `rationale`, `cost_usd`, `tokens`) to `$RATCHET_PROPOSAL`;
otherwise the last line it printed is the rationale. The note is read without following
a link and up to 64 KiB: a note that is a link, not a regular file, or larger makes the
proposal an `invalid-proposal`, whose why never quotes what the note pointed at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ratchet.environment import child_environment
from ratchet.measure import format_seconds
from ratchet.proposers.base import Cost, Outcome, Proposal, ProposalError, ProposerContext
from ratchet.safeio import Refused, read_capped, remove_entry
from ratchet.sandbox import pidfile_for

MAX_RATIONALE = 2000
MAX_NOTE_BYTES = 64 << 10
NOTE_FILE = ".ratchet-proposal"


class CommandProposer:
    name = "command"

    def __init__(self, context: ProposerContext) -> None:
        self.spec = context.spec.proposer
        self.sandbox = context.sandbox
        self.grace = context.spec.metric.grace
        self.state_dir = context.state_dir

    def propose(self, worktree: Path, brief_path: Path) -> Proposal:
        assert self.spec.command is not None
        # inside the worktree, so that a sandboxed proposer can write it; read and removed
        # before the change is collected, so it is never part of the proposal
        note = worktree / NOTE_FILE
        remove_entry(note)
        env = child_environment(
            allow=self.spec.env,
            extra={"RATCHET_BRIEF": str(brief_path), "RATCHET_PROPOSAL": str(note)},
        )
        start = time.monotonic()
        result = self.sandbox.run(
            self.spec.command, worktree, env, self.spec.budget, self.grace, pidfile_for(worktree)
        )
        seconds = time.monotonic() - start
        if result.timed_out:
            raise ProposalError(
                f"the proposer ran past its {format_seconds(self.spec.budget)} budget and was killed"
            )
        lines = [line.strip() for line in result.output.splitlines() if line.strip()]
        if result.returncode != 0:
            last = lines[-1][:200] if lines else "no output"
            raise ProposalError(f"the proposer exited with code {result.returncode}: {last}")
        try:
            fields = _read_note(worktree)
        finally:
            remove_entry(note)
        rationale = str(fields.get("rationale") or (lines[-1] if lines else ""))
        cost = Cost(
            seconds=seconds,
            tokens=int(_non_negative(fields.get("tokens"))),
            usd=_non_negative(fields.get("cost_usd")),
        )
        return Proposal(rationale=rationale[:MAX_RATIONALE], cost=cost)

    def observe(self, outcome: Outcome) -> None:
        """A command keeps its own memory: it reads the history from the brief."""


def _read_note(worktree: Path) -> dict[str, Any]:
    try:
        text = read_capped(worktree, NOTE_FILE, MAX_NOTE_BYTES).decode(errors="replace").strip()
    except FileNotFoundError:
        return {}
    except Refused as why:
        raise ProposalError(f"the proposer's note ($RATCHET_PROPOSAL): {why}") from None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return {"rationale": text}
        return data if isinstance(data, dict) else {"rationale": text}
    return {"rationale": text}


def _non_negative(raw: object) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0:
        return float(raw)
    return 0.0
