"""A local server that speaks OpenAI's `/v1/chat/completions` and Anthropic's
`/v1/messages`, and replays a script.

Each scripted reply is a tool call, a plain message, an HTTP error with headers, or a
reply that arrives late; the same script plays in either protocol, chosen by the path
each request is sent to. The requests it received are kept, so tests can check what the
model was shown.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
ANTHROPIC_USAGE = {"input_tokens": 100, "output_tokens": 10}


def tool_call(name: str, **arguments: object) -> dict[str, Any]:
    return {"tool_calls": [{"id": f"call-{name}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)}}]}  # fmt: skip


def error(status: int, **headers: str) -> dict[str, Any]:
    return {"status": status, "headers": headers}


def late(seconds: float, step: dict[str, Any]) -> dict[str, Any]:
    """`step`, sent after `seconds`: longer than the client waits is a timeout."""
    return {**step, "delay": seconds}


def openai_reply(step: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": step.get("content"), **step}
    return {"id": "r", "object": "chat.completion", "created": 0, "model": "fake",
            "usage": USAGE, "choices": [{"index": 0, "message": message,
                                         "finish_reason": "tool_calls"}]}  # fmt: skip


def anthropic_reply(step: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if step.get("content"):
        content.append({"type": "text", "text": step["content"]})
    for call in step.get("tool_calls", []):
        content.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                        "input": json.loads(call["function"]["arguments"])})  # fmt: skip
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": "fake",
            "content": content, "stop_reason": "tool_use" if len(content) > 1 else "end_turn",
            "stop_sequence": None, "usage": ANTHROPIC_USAGE}  # fmt: skip


class FakeLLM:
    def __init__(self, script: list[dict[str, Any] | str]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.arrived: list[float] = []  # when each request came in
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.arrived.append(time.monotonic())
                fake.requests.append(json.loads(body))
                step = fake.script.pop(0) if fake.script else {"content": "no more script"}
                if isinstance(step, str):  # raw bytes: a malformed reply
                    self._send(200, step.encode())
                elif "status" in step:
                    self._send(step["status"], b'{"error": {"message": "slow down"}}',
                               step["headers"])  # fmt: skip
                else:
                    step = dict(step)
                    time.sleep(step.pop("delay", 0))
                    anthropic = self.path.endswith("/messages")
                    reply = anthropic_reply(step) if anthropic else openai_reply(step)
                    with contextlib.suppress(OSError):  # the client gave up waiting
                        self._send(200, json.dumps(reply).encode())

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def anthropic_url(self) -> str:
        """The Anthropic SDK adds `/v1/messages` itself."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
