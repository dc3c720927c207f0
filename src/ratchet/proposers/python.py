"""A proposer written in Python, passed to `Project.run(proposer=...)`: a function
`propose(workdir, brief) -> Proposal`, or an object with that `propose` method and
optionally `observe(outcome)`.

It runs in ratchet's process, as the user's own code, without a sandbox: it is the
search the user plugs in, not an untrusted plug-in. What it changes is still checked
like any proposal (scope, duplicates, measurement); whatever it raises is the
experiment's `invalid-proposal` decision, with the exception as why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ratchet.decisions import BASELINE_PROPOSER
from ratchet.proposers.base import Outcome, Proposal, ProposalError

ProposeFunction = Callable[[Path, dict[str, Any]], Proposal]


@runtime_checkable
class ProposerObject(Protocol):
    def propose(self, workdir: Path, brief: dict[str, Any]) -> Proposal: ...


class PythonProposer:
    """Adapts a Python function or object to the proposer protocol."""

    def __init__(self, search: ProposeFunction | ProposerObject, name: str | None = None) -> None:
        if isinstance(search, ProposerObject):
            self._propose: ProposeFunction = search.propose
            self._observe: Callable[[Outcome], None] | None = getattr(search, "observe", None)
            default = getattr(search, "name", None) or type(search).__name__
        elif callable(search):
            self._propose, self._observe = search, None
            default = getattr(search, "__name__", None) or type(search).__name__
        else:
            raise TypeError(
                f"a proposer is a function (workdir, brief) -> Proposal or an object with "
                f"such a propose method, not {type(search).__name__}"
            )
        label = str(name or default)
        # the journal tells the baseline by its proposer: a search never takes that name
        self.name = f"python:{label}" if label != BASELINE_PROPOSER else "python"

    def propose(self, worktree: Path, brief_path: Path) -> Proposal:
        brief = json.loads(brief_path.read_text())
        proposal = self._propose(worktree, brief)
        if not isinstance(proposal, Proposal):
            raise ProposalError(
                f"the proposer returned {type(proposal).__name__}, not a ratchet.Proposal"
            )
        return proposal

    def observe(self, outcome: Outcome) -> None:
        if self._observe is not None:
            self._observe(outcome)
