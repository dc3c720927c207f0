"""`kind = "portfolio"`: several proposers, one chosen by weight for each experiment.

    [proposer]
    kind = "portfolio"
    [[proposer.members]]
    kind = "llm"            # structural changes, and new `# ratchet: knob` annotations
    model = "gpt-5"
    weight = 1
    [[proposer.members]]
    kind = "knobs"          # Optuna tunes the numbers, including the knobs the LLM added
    weight = 3

The journal names the member that made each proposal, and each outcome goes back to
the member that made it. A member that cannot start yet (`knobs` before any knob is
annotated) is tried again at each of its turns, and until then its turns go to the
others.
"""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from pathlib import Path

from ratchet import workspace
from ratchet.errors import UsageError
from ratchet.proposers.base import Outcome, Proposal, ProposalError, Proposer, ProposerContext
from ratchet.specmodel import ProposerSpec


class PortfolioProposer:
    name = "portfolio"

    def __init__(self, context: ProposerContext) -> None:
        self.context = context
        self.specs: list[ProposerSpec] = context.spec.proposer.members
        self.members: list[Proposer | None] = [None] * len(self.specs)
        self.not_ready: list[str] = [""] * len(self.specs)
        self.random = random.Random(context.spec.proposer.seed)
        self.lock = threading.Lock()  # slots propose at once: one draw, one start at a time
        for index in range(len(self.specs)):
            self._start(index, context)
        if not any(self.members):
            raise UsageError(f"no portfolio member could start: {'; '.join(self.not_ready)}")

    def _start(self, index: int, context: ProposerContext) -> Proposer | None:
        from ratchet.proposers import make_proposer  # the registry imports this module

        try:
            self.members[index] = make_proposer(context, self.specs[index])
        except UsageError as error:  # e.g. no knob annotated yet: perhaps later
            self.not_ready[index] = f"{self.specs[index].kind}: {error}"
        return self.members[index]

    def _choose(self, worktree: Path) -> tuple[int, Proposer]:
        waiting = set(range(len(self.specs)))
        while waiting:
            order = sorted(waiting)
            index = self.random.choices(order, [self.specs[i].weight for i in order])[0]
            member = self.members[index]
            if member is None:
                files = workspace.tracked_files(worktree)
                member = self._start(index, replace(self.context, worktree=worktree, files=files))
            if member is not None:
                return index, member
            waiting.discard(index)
        raise ProposalError(f"no portfolio member is ready: {'; '.join(self.not_ready)}")

    def propose(self, worktree: Path, brief_path: Path) -> Proposal:
        with self.lock:
            index, member = self._choose(worktree)
        try:
            proposal = member.propose(worktree, brief_path)
        except ProposalError as error:
            raise ProposalError(f"{member.name}: {error}") from None
        meta = {**proposal.meta, "member": index}
        return replace(proposal, meta=meta, by=member.name)

    def observe(self, outcome: Outcome) -> None:
        index = outcome.meta.get("member")
        if isinstance(index, int) and 0 <= index < len(self.members):
            member = self.members[index]
            if member is not None:
                member.observe(outcome)
