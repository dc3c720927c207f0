"""A loopback server that speaks the protocols the coding-agent CLIs use, and replays a script.

- Anthropic Messages (`POST /v1/messages`, Claude Code adds `?beta=true`): streaming
  server-sent events with `text` and `tool_use` blocks, tool input as `input_json_delta`;
  `count_tokens` is answered too.
- OpenAI Responses (`POST /v1/responses`, codex): streaming events with `message` and
  `function_call` output items and the usage in `response.completed`.
- OpenAI chat completions (`POST /v1/chat/completions`, aider through litellm): a whole
  JSON reply, or chunks when the client asks for a stream.

Each model turn takes the next step of the script: a `Turn` (text and tool calls), a
`Fail` (an HTTP error in the protocol's own error shape), a `Stall` (headers never
come: the client hangs until the server closes) or a `Garbled` stream. A step may be a
function of the request's body, for scripts that need what the CLI said (its working
folder). Every request is logged, with its path and body, and any secret header masked.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKENS_IN, TOKENS_OUT = 1000, 50  # per model turn
SECRET_HEADERS = {"authorization", "x-api-key", "api-key"}


@dataclass
class Turn:
    text: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Fail:
    status: int
    message: str


@dataclass
class Stall:
    """Never answer: the client waits until the server closes."""


@dataclass
class Garbled:
    """A 200 event stream whose events are not JSON."""


Step = Turn | Fail | Stall | Garbled
Script = list[Step | Callable[[dict[str, Any]], Step]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def working_folder(body: dict[str, Any]) -> str:
    """The folder the CLI works in, as its own prompt names it (Claude Code, codex)."""
    text = json.dumps(body)
    found = re.search(r"Primary working directory: (.+?)\\n", text) or re.search(
        r"<cwd>(.+?)</cwd>", text
    )
    if not found:
        raise AssertionError("the request names no working folder")
    return found.group(1)


def tool_results(body: dict[str, Any]) -> list[str]:
    """The tool results the CLI sent back so far, as text, in either protocol."""
    found: list[str] = []
    for message in body.get("messages", []):  # Anthropic
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if block.get("type") == "tool_result":
                inner = block.get("content")
                found.append(inner if isinstance(inner, str) else json.dumps(inner))
    for item in body.get("input", []):  # Responses
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            output = item.get("output")
            found.append(output if isinstance(output, str) else json.dumps(output))
    return found


def _sse(name: str | None, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode()


def anthropic_events(turn: Turn, model: str, number: int) -> list[bytes]:
    usage = {"input_tokens": TOKENS_IN, "output_tokens": 1}
    message = {"id": f"msg_{number}", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}  # fmt: skip
    events = [_sse("message_start", {"type": "message_start", "message": message})]
    blocks: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if turn.text:
        blocks.append(({"type": "text", "text": ""}, {"type": "text_delta", "text": turn.text}))
    for i, (name, arguments) in enumerate(turn.calls):
        start = {"type": "tool_use", "id": f"toolu_{number}_{i}", "name": name, "input": {}}
        blocks.append((start, {"type": "input_json_delta", "partial_json": json.dumps(arguments)}))
    for index, (start, delta) in enumerate(blocks):
        events.append(_sse("content_block_start", {"type": "content_block_start",
                                                   "index": index, "content_block": start}))  # fmt: skip
        events.append(_sse("content_block_delta", {"type": "content_block_delta",
                                                   "index": index, "delta": delta}))  # fmt: skip
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = "tool_use" if turn.calls else "end_turn"
    events.append(_sse("message_delta", {"type": "message_delta",
                       "delta": {"stop_reason": stop, "stop_sequence": None},
                       "usage": {"output_tokens": TOKENS_OUT}}))  # fmt: skip
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def responses_events(turn: Turn, model: str, number: int) -> list[bytes]:
    response = {"id": f"resp_{number}", "object": "response", "created_at": 0,
                "status": "in_progress", "model": model, "output": []}  # fmt: skip
    events = [_sse("response.created", {"type": "response.created", "response": response})]
    items: list[dict[str, Any]] = []
    if turn.text:
        items.append({"type": "message", "id": f"msg_{number}", "role": "assistant",
                      "status": "completed",
                      "content": [{"type": "output_text", "text": turn.text, "annotations": []}]})  # fmt: skip
    for i, (name, arguments) in enumerate(turn.calls):
        items.append({"type": "function_call", "id": f"fc_{number}_{i}",
                      "call_id": f"call_{number}_{i}", "name": name,
                      "arguments": json.dumps(arguments), "status": "completed"})  # fmt: skip
    for index, item in enumerate(items):
        events.append(_sse("response.output_item.added", {"type": "response.output_item.added",
                                                          "output_index": index, "item": item}))  # fmt: skip
        events.append(_sse("response.output_item.done", {"type": "response.output_item.done",
                                                         "output_index": index, "item": item}))  # fmt: skip
    usage = {"input_tokens": TOKENS_IN, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": TOKENS_OUT, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": TOKENS_IN + TOKENS_OUT}  # fmt: skip
    done = {**response, "status": "completed", "output": items, "usage": usage}
    events.append(_sse("response.completed", {"type": "response.completed", "response": done}))
    return events


def chat_completion(turn: Turn, model: str) -> dict[str, Any]:
    usage = {"prompt_tokens": TOKENS_IN, "completion_tokens": TOKENS_OUT,
             "total_tokens": TOKENS_IN + TOKENS_OUT}  # fmt: skip
    message = {"role": "assistant", "content": turn.text}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "usage": usage, "choices": [{"index": 0, "message": message,
                                         "finish_reason": "stop"}]}  # fmt: skip


def chat_chunks(turn: Turn, model: str) -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model}
    usage = {"prompt_tokens": TOKENS_IN, "completion_tokens": TOKENS_OUT,
             "total_tokens": TOKENS_IN + TOKENS_OUT}  # fmt: skip
    return [
        _sse(None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                "content": turn.text}}]}),
        _sse(None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        _sse(None, {**base, "choices": [], "usage": usage}),
        _sse(None, "[DONE]"),
    ]  # fmt: skip


def error_body(path: str, status: int, message: str) -> dict[str, Any]:
    if "/messages" in path:
        kind = "authentication_error" if status == 401 else "api_error"
        return {"type": "error", "error": {"type": kind, "message": message}}
    code = "invalid_api_key" if status == 401 else "server_error"
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A CLI that hangs up (killed at its budget, done early) is no test failure."""


class AgentServer:
    """The server; use as a context manager. `requests` logs every request it got."""

    def __init__(self, script: Script) -> None:
        self.script = list(script)
        self.requests: list[Request] = []
        self.turns = 0
        self.closing = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._log(self, {})
                self._json(404, {"error": {"message": f"no {self.path} here"}})

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                server._log(self, body)
                path = self.path.split("?", 1)[0]
                if path.endswith("/count_tokens"):
                    self._json(200, {"input_tokens": TOKENS_IN})
                elif path.endswith(("/messages", "/responses", "/chat/completions")):
                    with contextlib.suppress(OSError):  # the client gave up
                        self._turn(path, body)
                else:
                    self._json(404, {"error": {"message": f"no {path} here"}})

            def _turn(self, path: str, body: dict[str, Any]) -> None:
                step, number = server._next(body)
                model = str(body.get("model") or "fake")
                if isinstance(step, Fail):
                    self._json(step.status, error_body(path, step.status, step.message))
                elif isinstance(step, Stall):
                    server.closing.wait()
                    self.close_connection = True
                elif isinstance(step, Garbled):
                    self._stream([b"event: message_start\ndata: {not json\n\n"])
                elif path.endswith("/messages"):
                    if body.get("stream"):
                        self._stream(anthropic_events(step, model, number))
                    else:
                        self._json(200, _anthropic_whole(step, model, number))
                elif path.endswith("/responses"):
                    self._stream(responses_events(step, model, number))
                elif body.get("stream"):
                    self._stream(chat_chunks(step, model))
                else:
                    self._json(200, chat_completion(step, model))

            def _json(self, status: int, data: dict[str, Any]) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, events: list[bytes]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for event in events:
                    self.wfile.write(event)
                self.wfile.flush()
                self.close_connection = True

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _log(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        headers = {
            k.lower(): ("***" if k.lower() in SECRET_HEADERS else v)
            for k, v in handler.headers.items()
        }
        with self.lock:
            self.requests.append(Request(handler.command, handler.path, headers, body))

    def _next(self, body: dict[str, Any]) -> tuple[Step, int]:
        with self.lock:
            self.turns += 1
            number = self.turns
            step = self.script.pop(0) if self.script else Turn("No more script.")
        return (step(body) if callable(step) else step), number

    def turn_requests(self) -> list[Request]:
        """The requests that asked the model for a turn."""
        ends = ("/messages", "/responses", "/chat/completions")
        return [r for r in self.requests if r.path.split("?", 1)[0].endswith(ends)]

    @property
    def url(self) -> str:
        """The server's root; each CLI appends its own path (`/v1/...`) or needs `/v1`."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> AgentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def _anthropic_whole(turn: Turn, model: str, number: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text else []
    for i, (name, arguments) in enumerate(turn.calls):
        content.append({"type": "tool_use", "id": f"toolu_{number}_{i}", "name": name,
                        "input": arguments})  # fmt: skip
    return {"id": f"msg_{number}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "tool_use" if turn.calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": TOKENS_IN, "output_tokens": TOKENS_OUT}}  # fmt: skip
