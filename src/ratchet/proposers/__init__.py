"""Proposers, chosen by `[proposer] kind` through one registry."""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Callable
from dataclasses import replace

from ratchet.proposers.base import (
    Cost,
    Outcome,
    Proposal,
    ProposalError,
    Proposer,
    ProposerContext,
)
from ratchet.spec import ProposerSpec

__all__ = [
    "Cost",
    "Outcome",
    "Proposal",
    "ProposalError",
    "Proposer",
    "ProposerContext",
    "make_proposer",
    "preload",
]


def _knobs(context: ProposerContext) -> Proposer:
    _wait_for_preload("ratchet.proposers.knobs")
    from ratchet.proposers.knobs import KnobsProposer  # imports optuna: only when used

    return KnobsProposer(context)


def _command(context: ProposerContext) -> Proposer:
    from ratchet.proposers.command import CommandProposer

    return CommandProposer(context)


def _llm(context: ProposerContext) -> Proposer:
    from ratchet.proposers.llm import LLMProposer  # imports the openai SDK: only when used

    return LLMProposer(context)


def _agent_cli(context: ProposerContext) -> Proposer:
    from ratchet.proposers.agents import AgentCLIProposer

    return AgentCLIProposer(context)


def _portfolio(context: ProposerContext) -> Proposer:
    from ratchet.proposers.portfolio import PortfolioProposer

    return PortfolioProposer(context)


REGISTRY: dict[str, Callable[[ProposerContext], Proposer]] = {
    "knobs": _knobs,
    "command": _command,
    "llm": _llm,
    "claude-code": _agent_cli,
    "codex": _agent_cli,
    "aider": _agent_cli,
    "portfolio": _portfolio,
}


def make_proposer(context: ProposerContext, spec: ProposerSpec | None = None) -> Proposer:
    """The proposer `spec` describes (by default the run's), made for `context`."""
    if spec is not None:
        context = replace(context, spec=context.spec.model_copy(update={"proposer": spec}))
    return REGISTRY[context.spec.proposer.kind](context)


# what a kind imports when it is made, where that import costs a start noticeable time:
# optuna and numpy, a third of a second of CPU
HEAVY_IMPORTS = {"knobs": "ratchet.proposers.knobs"}
_preloading: dict[str, threading.Thread] = {}
_preload_guard = threading.Lock()


def preload(spec: ProposerSpec) -> list[threading.Thread]:
    """Import the heavy libraries of the proposer `spec` describes (a portfolio's members
    included) in background threads, so that a run's start, which waits on git and the
    journal before it makes its proposer, pays for them in that wait. Called more than
    once, or for a module already imported, it starts nothing. The proposer is made as
    before: its own import of the module waits for the one in flight (Python's import
    lock), and a failed import is raised there, as it would be without this."""
    started = []
    with _preload_guard:
        for kind in sorted(_kinds(spec)):
            module = HEAVY_IMPORTS.get(kind)
            if module is None or module in sys.modules or module in _preloading:
                continue
            thread = threading.Thread(
                target=_import_quietly, args=(module,), name=f"ratchet-import-{kind}", daemon=True
            )
            _preloading[module] = thread
            thread.start()
            started.append(thread)
    return started


def _kinds(spec: ProposerSpec) -> set[str]:
    return {spec.kind}.union(*(_kinds(member) for member in spec.members))


def _wait_for_preload(module: str) -> None:
    """The preload of `module`, if one is in flight, finished first: the proposer's
    import then finds the module whole (or fails as it would have)."""
    with _preload_guard:
        thread = _preloading.get(module)
    if thread is not None:
        thread.join()


def _import_quietly(module: str) -> None:
    # a failure is not news here: the proposer's own import raises it, in the run's thread
    with contextlib.suppress(BaseException):
        importlib.import_module(module)
