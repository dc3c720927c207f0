"""Proposers, chosen by `[proposer] kind` through one registry."""

from __future__ import annotations

from collections.abc import Callable

from ratchet.proposers.base import (
    Cost,
    Outcome,
    Proposal,
    ProposalError,
    Proposer,
    ProposerContext,
)

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


REGISTRY: dict[str, Callable[[ProposerContext], Proposer]] = {
    "knobs": _knobs,
    "command": _command,
    "llm": _llm,
}


def make_proposer(context: ProposerContext) -> Proposer:
    return REGISTRY[context.spec.proposer.kind](context)
