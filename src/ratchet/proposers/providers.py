"""One conversation with a model, over OpenAI's or Anthropic's wire protocol.

The `llm` proposer's agent loop speaks to a `Chat`: ask for a turn, answer its tool
calls, nudge it with a user message. Each provider keeps its own message list, in its
own format, so the loop never sees the difference. Transport retries (429, 5xx,
timeouts, `Retry-After`, with backoff and jitter) are the official SDKs' own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from ratchet.spec import ProposerSpec, SpecError

REPLY_MAX_TOKENS = 8192  # Anthropic requires a cap on each reply


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
                "run: pip install 'ratchet[anthropic]'"
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
