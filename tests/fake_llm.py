"""A local server that speaks OpenAI's `/v1/chat/completions` (streaming too) and
`/v1/responses`, and Anthropic's `/v1/messages`, and replays a script.

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


def openai_stream(step: dict[str, Any], request: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a streamed chat completion: the text in two pieces, then the usage
    chunk when the request asked for it (`stream_options.include_usage`)."""
    text = str(step.get("content") or "")
    half = len(text) // 2
    chunks = [{"id": "r", "object": "chat.completion.chunk", "created": 0, "model": "fake",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece},
                            "finish_reason": None}]} for piece in (text[:half], text[half:])]  # fmt: skip
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    if (request.get("stream_options") or {}).get("include_usage"):
        chunks.append({"id": "r", "object": "chat.completion.chunk", "created": 0,
                       "model": "fake", "choices": [], "usage": USAGE})  # fmt: skip
    return chunks


def responses_reply(step: dict[str, Any]) -> dict[str, Any]:
    text = str(step.get("content") or "")
    return {"id": "resp", "object": "response", "created_at": 0, "model": "fake",
            "status": "completed", "output": [{"type": "message", "id": "m", "role": "assistant",
            "status": "completed", "content": [{"type": "output_text", "text": text,
                                                "annotations": []}]}],
            "usage": {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}}  # fmt: skip


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
        self.headers: list[dict[str, str]] = []  # each request's headers, lower-case names
        self.arrived: list[float] = []  # when each request came in
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.arrived.append(time.monotonic())
                fake.requests.append(json.loads(body))
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                step = fake.script.pop(0) if fake.script else {"content": "no more script"}
                if isinstance(step, str):  # raw bytes: a malformed reply
                    self._send(200, step.encode())
                elif "status" in step:
                    self._send(step["status"], b'{"error": {"message": "slow down"}}',
                               step["headers"])  # fmt: skip
                else:
                    step = dict(step)
                    time.sleep(step.pop("delay", 0))
                    if fake.requests[-1].get("stream") and self.path.endswith("/completions"):
                        self._stream(openai_stream(step, fake.requests[-1]))
                        return
                    anthropic = self.path.endswith("/messages")
                    reply = anthropic_reply(step) if anthropic else openai_reply(step)
                    if self.path.endswith("/responses"):
                        reply = responses_reply(step)
                    with contextlib.suppress(OSError):  # the client gave up waiting
                        self._send(200, json.dumps(reply).encode())

            def _stream(self, chunks: list[dict[str, Any]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # no length: the body ends when the connection closes
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

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
