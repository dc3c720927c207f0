"""Reading what a coding-agent CLI printed: the rationale, the tokens, the cost, its errors.

Claude Code prints one JSON result (`result`, `is_error`, `total_cost_usd`, `usage`);
codex prints JSON events (`turn.completed` carries the usage, `turn.failed` and `error`
the reason it stopped); aider prints text (`Tokens: ... Cost: ...` lines, and the
provider's error when a request fails).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ratchet.proposers.base import ProposalError

MESSAGES = {"agent_message", "assistant_message"}  # codex's item types for its replies
_RATIONALE = re.compile(r"^[\s*_#>-]*rationale\s*[:*_]+\s*(.+?)[\s*_]*$", re.IGNORECASE)
_COUNT = r"\d[\d.]*[kKmM]?"
_AIDER_TOKENS = re.compile(
    rf"Tokens: (?P<sent>{_COUNT}) sent(?:, {_COUNT} cache \w+)*, (?P<received>{_COUNT}) "
    r"received\.(?: Cost: \$(?P<message>\d[\d.]*) message, \$(?P<session>\d[\d.]*) session\.)?"
)
_AIDER_APPLIED = re.compile(r"^Applied edit to (.+)$", re.MULTILINE)
# the provider's exception, as litellm names it, and what aider prints after it
_AIDER_ERROR = re.compile(r"^litellm\.\w+(?:Error|Exception):.*", re.MULTILINE | re.DOTALL)


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


def parse_claude(stdout: str) -> Reply:
    whole = _json_lines(stdout.strip().replace("\n", " "))  # printed pretty, perhaps
    found = [
        d for d in [*whole, *reversed(_json_lines(stdout))] if "result" in d or "is_error" in d
    ]
    if not found:
        raise Unreadable(f"claude printed no JSON result: {last_line(stdout) or 'no output'}")
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


def parse_codex(stdout: str) -> Reply:
    events = _json_lines(stdout)
    if not any("type" in e for e in events):
        raise Unreadable(f"codex printed no JSON events: {last_line(stdout) or 'no output'}")
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


def parse_aider(stdout: str) -> Reply:
    """aider's report; it exits 0 after a failed request, so its printed error is the sign."""
    reports = list(_AIDER_TOKENS.finditer(stdout))
    error = _AIDER_ERROR.search(stdout)
    if error and not reports:
        message = " ".join(line.strip() for line in error.group(0).splitlines() if line.strip())
        raise ProposalError(f"aider reported an error: {message[:500]}")
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


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def telling_line(text: str) -> str:
    """The last line that names an error (a usage message ends in a hint), else the last."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[-1]


def _count(raw: object) -> int:
    return int(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0 else 0


def _tokens(text: str) -> int:
    """aider's token counts: `950`, `2.3k`, `12k`, `1.5M`."""
    scale = {"k": 1e3, "m": 1e6}.get(text[-1].lower(), 1)
    return int(float(text.rstrip("kKmM")) * scale)
