"""A local server that speaks OpenAI's `/v1/chat/completions` and replays a script.

Each scripted reply is a tool call, a plain message, or an HTTP error with headers. The
requests it received are kept, so tests can check what the model was shown.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}


def tool_call(name: str, **arguments: object) -> dict[str, Any]:
    return {"tool_calls": [{"id": f"call-{name}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)}}]}  # fmt: skip


def error(status: int, **headers: str) -> dict[str, Any]:
    return {"status": status, "headers": headers}


class FakeLLM:
    def __init__(self, script: list[dict[str, Any] | str]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(json.loads(body))
                step = fake.script.pop(0) if fake.script else {"content": "no more script"}
                if isinstance(step, str):  # raw bytes: a malformed reply
                    self._send(200, step.encode())
                elif "status" in step:
                    self._send(step["status"], b'{"error": {"message": "slow down"}}',
                               step["headers"])  # fmt: skip
                else:
                    message = {"role": "assistant", "content": step.get("content"), **step}
                    reply = {"id": "r", "object": "chat.completion", "created": 0,
                             "model": "fake", "usage": USAGE,
                             "choices": [{"index": 0, "message": message,
                                          "finish_reason": "tool_calls"}]}  # fmt: skip
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

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
