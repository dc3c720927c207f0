"""Proposers, chosen by `[proposer] kind` through one registry."""

from __future__ import annotations

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
]


def _knobs(context: ProposerContext) -> Proposer:
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
