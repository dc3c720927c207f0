"""One conversation with a model, over OpenAI's or Anthropic's wire protocol.

The `llm` proposer's agent loop speaks to a `Chat`: ask for a turn, answer its tool
calls, nudge it with a user message. Each provider keeps its own message list, in its
own format, so the loop never sees the difference. Transport retries (429, 5xx,
timeouts, `Retry-After`, with backoff and jitter) are the official SDKs' own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ratchet.proposers.reach import unreachable as url_unreachable
from ratchet.spec import SpecError
from ratchet.specmodel import ProposerSpec

REPLY_MAX_TOKENS = 8192  # Anthropic requires a cap on each reply
DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
BACKOFF_FIRST, BACKOFF_MAX = 15.0, 240.0  # seconds between tries of an unreachable endpoint


def endpoint_url(spec: ProposerSpec) -> str:
    """The URL the SDK sends requests to, as a message names it."""
    return spec.base_url or DEFAULT_URLS.get(spec.provider, DEFAULT_URLS["openai"])


def unreachable(spec: ProposerSpec) -> str | None:
    """Why the endpoint cannot be reached now (no connection opens), or None."""
    return url_unreachable(endpoint_url(spec))


def is_connection_failure(error: BaseException) -> bool:
    """The SDK could not reach the endpoint at all (after its own retries): not a slow
    reply (a timeout), not an error the endpoint answered with."""
    names = {kind.__name__ for kind in type(error).__mro__}
    return "APIConnectionError" in names and "APITimeoutError" not in names


class Backoff:
    """When each endpoint may be tried again, shared by every proposal (and portfolio
    member) of the process: an endpoint that cannot be reached costs one try per back-off
    period, not the SDK's retries in every experiment."""

    def __init__(self) -> None:
        # re-entrant: `interrupt` may run in a signal handler on a thread that holds it
        self.lock = threading.RLock()
        self.failures: dict[str, tuple[int, float]] = {}  # url: (in a row, next try at)
        self._woken = threading.Condition(self.lock)
        self._interrupts = 0  # how many `interrupt`s so far: a pause ends at the next one

    def pause(self, seconds: float) -> bool:
        """Sleep `seconds` waiting out a back-off; False when `interrupt` cut it short (a
        stop must not wait for up to a proposal's budget)."""
        end = time.monotonic() + seconds
        with self._woken:
            seen = self._interrupts
            while self._interrupts == seen:
                left = end - time.monotonic()
                if left <= 0:
                    return True
                self._woken.wait(left)
            return False

    def interrupt(self) -> None:
        """End every pause now (a run is stopping). Safe from a signal handler."""
        with self._woken:
            self._interrupts += 1
            self._woken.notify_all()

    def wait(self, url: str) -> float:
        """Seconds until `url` may be tried (0: now)."""
        with self.lock:
            _, at = self.failures.get(url, (0, 0.0))
        return max(0.0, at - time.monotonic())

    def failed(self, url: str) -> float:
        """Count a failure to connect; the seconds until the next try."""
        with self.lock:
            count = self.failures.get(url, (0, 0.0))[0] + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (count - 1))
            self.failures[url] = (count, time.monotonic() + delay)
        return delay

    def reached(self, url: str) -> None:
        with self.lock:
            self.failures.pop(url, None)


BACKOFF = Backoff()


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it: it may be malformed


@dataclass(frozen=True)
class Turn:
    text: str
    calls: list[ToolCall] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema


class Chat(Protocol):
    def ask(self, timeout: float) -> Turn:
        """The model's next turn; the SDK's errors propagate after its own retries."""
        ...

    def answer(self, results: list[tuple[str, str]]) -> None:
        """Tell the model what each of its tool calls (by id) returned."""
        ...

    def say(self, text: str) -> None:
        """Add a user message."""
        ...


def open_chat(spec: ProposerSpec, system: str, user: str, tools: list[Tool]) -> Chat:
    key = os.environ.get(spec.key_variable, "") or "not-needed"  # local servers take any
    if spec.provider == "anthropic":
        return AnthropicChat(spec, key, system, user, tools)
    return OpenAIChat(spec, key, system, user, tools)


class OpenAIChat:
    """`/v1/chat/completions`: OpenAI, vLLM, Ollama, llama.cpp's server, OpenRouter."""

    def __init__(
        self, spec: ProposerSpec, key: str, system: str, user: str, tools: list[Tool]
    ) -> None:
        from openai import OpenAI  # imported only when this provider is used

        self.model = spec.model or ""
        self.client = OpenAI(base_url=spec.base_url, api_key=key, max_retries=spec.retries)
        self.tools = [{"type": "function", "function": {"name": t.name, "description":
                       t.description, "parameters": t.parameters}} for t in tools]  # fmt: skip
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]

    def ask(self, timeout: float) -> Turn:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=self.messages,  # type: ignore[arg-type]
            tools=self.tools,  # type: ignore[arg-type]
            timeout=timeout,
        )
        if not response.choices:
            raise ValueError("the model's reply had no message")
        message = response.choices[0].message
        self.messages.append(message.model_dump(exclude_none=True))
        calls = [
            ToolCall(call.id, call.function.name, call.function.arguments or "{}")
            for call in message.tool_calls or []
            if call.type == "function"
        ]
        usage = response.usage
        return Turn(
            message.content or "",
            calls,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )

    def answer(self, results: list[tuple[str, str]]) -> None:
        for call_id, content in results:
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def say(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})


class AnthropicChat:
    """`/v1/messages`: Anthropic's API, through its official SDK (an optional extra)."""

    def __init__(
        self, spec: ProposerSpec, key: str, system: str, user: str, tools: list[Tool]
    ) -> None:
        try:
            from anthropic import Anthropic  # ~1 s to import: only when this provider is used
        except ImportError:
            raise SpecError(
                "[proposer] provider = 'anthropic' needs the anthropic SDK; "
                "run: pip install 'ratchet-loop[anthropic]'"
            ) from None
        self.model = spec.model or ""
        self.client = Anthropic(base_url=spec.base_url, api_key=key, max_retries=spec.retries)
        self.system = system
        self.tools = [{"name": t.name, "description": t.description,
                       "input_schema": t.parameters} for t in tools]  # fmt: skip
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": user}]

    def ask(self, timeout: float) -> Turn:
        response = self.client.messages.create(
            model=self.model,
            max_tokens=REPLY_MAX_TOKENS,
            system=self.system,
            messages=self.messages,  # type: ignore[arg-type]
            tools=self.tools,  # type: ignore[arg-type]
            timeout=timeout,
        )
        blocks = [block.model_dump(exclude_none=True) for block in response.content]
        self.messages.append({"role": "assistant", "content": blocks})
        text = "\n".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        calls = [
            ToolCall(b["id"], b["name"], json.dumps(b.get("input", {})))
            for b in blocks
            if b.get("type") == "tool_use"
        ]
        usage = response.usage
        return Turn(text, calls, usage.input_tokens, usage.output_tokens)

    def answer(self, results: list[tuple[str, str]]) -> None:
        content = [{"type": "tool_result", "tool_use_id": call_id, "content": text}
                   for call_id, text in results]  # fmt: skip
        self.messages.append({"role": "user", "content": content})

    def say(self, text: str) -> None:
        # Anthropic wants turns to alternate: a nudge after the model's turn is a user turn
        self.messages.append({"role": "user", "content": text})
