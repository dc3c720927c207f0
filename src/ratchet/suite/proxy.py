"""The metering proxy: the task agent's only way to its model, one per trial.

ratchet starts it on 127.0.0.1 before a trial and gives the agent its address as the
base URL (`OPENAI_BASE_URL`) and a dummy API key. The proxy forwards OpenAI-compatible
`/v1/chat/completions` (streamed or not) and `/v1/responses` to the real endpoint,
putting the real API key on each request itself: the secret never enters the
sandbox, so an agent (or a prompt injected into it) has nothing to leak.

Every call is recorded, one JSON line each, in the trial's `model_calls.jsonl`:
model, tokens, latency, price, and a short summary of the request and the reply. The
trial's spend cap is enforced here: once the metered cost reaches it, further calls
are answered with HTTP 402 (an error the SDK does not retry) and the proxy says the
trial was capped. Prices are dollars per million tokens by model (the spec's
`prices` shape); a model not in the table is priced at `DEFAULT_PRICE`, deliberately
high, so an unpriced model cannot run far past a cap unnoticed, and its calls say
`"priced": false`.

Under bwrap without network the agent cannot reach the host's loopback at all: the
proxy then also listens on a Unix socket (`unix_socket`), which is bound into the
sandbox, and `bridge.py` (run inside it, in front of the agent) relays the agent's
own loopback to it; see `bridge_command`.

Streamed chat completions are asked for their usage (`stream_options.include_usage`,
which the SDK handles: one more chunk with no choices), since a stream otherwise
carries no token counts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ratchet.sandbox.forward import BRIDGE  # the sandbox's end of `unix_socket`
from ratchet.suite.trials import TrialUsage

MODEL_CALLS = "model_calls.jsonl"  # in the trial's folder, beside trajectory.json
DUMMY_API_KEY = "ratchet-metered"  # what the agent is given instead of the real key
DEFAULT_PRICE = {"input": 15.0, "output": 75.0}  # dollars per million tokens, unpriced models
UPSTREAM_TIMEOUT = 600.0  # seconds one upstream call may take
SUMMARY_CHARS = 200  # of a request's last message and a reply's text, in the record
MAX_REQUEST_BYTES = 32 << 20
ROUTES = ("/chat/completions", "/responses")
# request headers passed on; every other one (the agent's Authorization above all) is not
FORWARDED = ("content-type", "accept", "user-agent", "openai-beta")
CAP_STATUS = 402
MIN_KEY_LENGTH = 6  # a shorter "key" would mask ordinary text


def bridge_command(python: str, unix_socket: Path, command: str) -> str:
    """A shell command that runs `command` (a shell line) behind the bridge: inside a
    sandbox whose only way out is `unix_socket`, with OPENAI_BASE_URL set by it. The
    bridge file and the socket must be visible in the sandbox at their own paths."""
    return shlex.join([python, "-I", str(BRIDGE), str(unix_socket), "--", "/bin/sh", "-c",
                       command])  # fmt: skip


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@dataclass(frozen=True)
class ModelCall:
    """One call the agent made, as the proxy saw it."""

    route: str
    model: str
    status: int  # the HTTP status the agent got
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    stream: bool
    priced: bool
    request: str  # the last message, cut short
    reply: str  # the reply's text (or error), cut short


def price_of(
    prices: dict[str, dict[str, float]], model: str, input_tokens: int, output_tokens: int
) -> tuple[float, bool]:
    """Dollars for one call, and whether the model was in the table (`*` is a catch-all)."""
    price = prices.get(model) or prices.get("*")
    priced = price is not None
    rate = price if price is not None else DEFAULT_PRICE
    cost = (input_tokens * rate.get("input", 0.0) + output_tokens * rate.get("output", 0.0)) / 1e6
    return cost, priced


def check_reported(reported: TrialUsage, metered: TrialUsage, tolerance: float = 0.05) -> str:
    """Why an agent's account of its own usage disagrees with what the proxy metered,
    or "" when it agrees (within `tolerance`, relative). The metered numbers are the
    ones ratchet charges; this only says that the agent's report cannot be trusted."""
    problems = []
    for name in ("input_tokens", "output_tokens", "calls", "cost_usd"):
        said, seen = getattr(reported, name), getattr(metered, name)
        if abs(said - seen) > tolerance * max(abs(seen), 1e-9) and not (said == seen == 0):
            problems.append(f"{name} {said:g} reported, {seen:g} metered")
    if not problems:
        return ""
    return "the agent's reported usage disagrees with the proxy: " + "; ".join(problems)


def _last_message(request: dict[str, Any]) -> str:
    messages = request.get("messages") or request.get("input") or []
    if isinstance(messages, str):
        return messages[:SUMMARY_CHARS]
    if isinstance(messages, list) and messages:
        last = messages[-1]
        content = last.get("content", "") if isinstance(last, dict) else last
        return (content if isinstance(content, str) else json.dumps(content))[:SUMMARY_CHARS]
    return ""


def _usage(body: dict[str, Any]) -> tuple[int, int]:
    """Input and output tokens of a chat completion, a response, or a stream's last
    chunk or `response.completed` event."""
    usage = body.get("usage")
    if not isinstance(usage, dict) and isinstance(body.get("response"), dict):
        usage = body["response"].get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    tokens_in = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
    tokens_out = usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
    return int(tokens_in), int(tokens_out)


def _text(body: dict[str, Any]) -> str:
    """The text (or tool calls' names) of a reply, a stream chunk or a response."""
    parts: list[str] = []
    for choice in body.get("choices") or []:
        message = choice.get("message") or choice.get("delta") or {}
        parts.append(str(message.get("content") or ""))
        for call in message.get("tool_calls") or []:
            name = (call.get("function") or {}).get("name")
            if name:
                parts.append(f"[tool {name}]")
    for item in body.get("output") or []:
        for content in item.get("content") or []:
            parts.append(str(content.get("text") or ""))
        if item.get("type") == "function_call":
            parts.append(f"[tool {item.get('name')}]")
    if body.get("type") == "response.output_text.delta":
        parts.append(str(body.get("delta") or ""))
    return "".join(parts)


class MeteringProxy:
    """`with MeteringProxy(url, key, prices, cap, record) as proxy:` run the agent with
    `OPENAI_BASE_URL=proxy.base_url` and `OPENAI_API_KEY=DUMMY_API_KEY`; then read
    `proxy.usage()`, `proxy.calls` and `proxy.capped`."""

    def __init__(
        self,
        upstream_base_url: str,
        upstream_api_key: str,
        prices: dict[str, dict[str, float]] | None = None,
        cap_usd: float | None = None,
        record_path: Path | None = None,
        timeout: float = UPSTREAM_TIMEOUT,
        unix_socket: Path | None = None,
    ) -> None:
        url = urlsplit(upstream_base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {upstream_base_url!r}")
        self.upstream = url
        self._key = upstream_api_key
        self.prices = dict(prices or {})
        self.cap_usd = cap_usd
        self.record_path = record_path
        self.timeout = timeout
        self.calls: list[ModelCall] = []
        self.capped = False  # a call was refused because the cap was reached
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._servers: list[socketserver.BaseServer] = [self._server]
        self.unix_socket = unix_socket
        if unix_socket is not None:
            unix = _UnixHTTPServer(str(unix_socket), self._handler())
            # the sandbox's user (nobody) must be able to connect; keep the socket in a
            # folder only ratchet's user can enter, so that no one else on the host can
            os.chmod(unix_socket, 0o666)
            self._servers.append(unix)
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True)
                         for s in self._servers]  # fmt: skip

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> MeteringProxy:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        if self.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_socket.unlink()

    def usage(self) -> TrialUsage:
        with self._lock:
            return TrialUsage(
                input_tokens=sum(c.input_tokens for c in self.calls),
                output_tokens=sum(c.output_tokens for c in self.calls),
                cost_usd=sum(c.cost_usd for c in self.calls),
                calls=sum(1 for c in self.calls if c.status == 200),
            )

    def check_reported(self, reported: TrialUsage, tolerance: float = 0.05) -> str:
        return check_reported(reported, self.usage(), tolerance)

    # --------------------------------------------------------------------------------
    def _spent(self) -> float:
        with self._lock:
            return sum(c.cost_usd for c in self.calls)

    def _record(self, call: ModelCall) -> None:
        with self._lock:
            self.calls.append(call)
            if self.record_path is not None:
                with self.record_path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(asdict(call)) + "\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass  # the record is the log; stderr would be the trial's

            def do_POST(self) -> None:
                proxy._serve(self)

        return Handler

    def _refuse(self, handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "ratchet_proxy",
                                     "code": "spend_cap" if status == CAP_STATUS else None}})  # fmt: skip
        with contextlib.suppress(OSError):
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body.encode())

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        path = handler.path.split("?", 1)[0]
        route = next((r for r in ROUTES if path.endswith(r)), None)
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(handler, 400, "the request has no valid Content-Length")
            return
        if length > MAX_REQUEST_BYTES:
            self._refuse(handler, 413, f"a request is at most {MAX_REQUEST_BYTES} bytes here")
            return
        if route is None:
            handler.rfile.read(length)
            self._refuse(handler, 404, f"ratchet's proxy serves only {', '.join(ROUTES)}")
            return
        raw = handler.rfile.read(length)
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            self._refuse(handler, 400, f"the request is not JSON: {error}")
            return
        model, stream = str(request.get("model", "")), bool(request.get("stream"))
        summary = _last_message(request)

        def record(status: int, tokens_in: int, tokens_out: int, reply: str) -> None:
            cost, priced = price_of(self.prices, model, tokens_in, tokens_out)
            self._record(ModelCall(route, model, status, tokens_in, tokens_out, cost,
                                   round(time.monotonic() - started, 4), stream, priced,
                                   summary, reply[:SUMMARY_CHARS]))  # fmt: skip

        if self.cap_usd is not None and self._spent() >= self.cap_usd:
            with self._lock:
                self.capped = True
            why = (f"ratchet: this trial's model spend cap of ${self.cap_usd:g} is used up; "
                   "no further model calls are allowed")  # fmt: skip
            record(CAP_STATUS, 0, 0, why)
            self._refuse(handler, CAP_STATUS, why)
            return
        if stream and route == "/chat/completions":
            options = request.get("stream_options")
            request["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                         "include_usage": True}  # fmt: skip
            raw = json.dumps(request).encode()
        headers = {k: v for k, v in handler.headers.items() if k.lower() in FORWARDED}
        headers["Authorization"] = f"Bearer {self._key}"
        headers["Content-Length"] = str(len(raw))
        kind = (http.client.HTTPSConnection if self.upstream.scheme == "https"
                else http.client.HTTPConnection)  # fmt: skip
        connection = kind(self.upstream.hostname or "", self.upstream.port, timeout=self.timeout)
        try:
            connection.request("POST", self.upstream.path + route, body=raw, headers=headers)
            upstream = connection.getresponse()
            if "text/event-stream" in (upstream.getheader("Content-Type") or ""):
                tokens_in, tokens_out, reply = self._relay_stream(handler, upstream, self._mask)
            else:
                tokens_in, tokens_out, reply = self._relay_body(handler, upstream, self._mask)
            record(upstream.status, tokens_in, tokens_out, reply)
        except (OSError, http.client.HTTPException) as error:
            why = f"ratchet's proxy could not reach the model: {type(error).__name__}: {error}"
            record(502, 0, 0, why)
            self._refuse(handler, 502, why)
        finally:
            connection.close()

    def _mask(self, data: bytes) -> bytes:
        """`data` without the real key: an endpoint that echoes it (in an error, say)
        must not hand it to the agent."""
        key = self._key.encode()
        return data.replace(key, b"***") if len(key) >= MIN_KEY_LENGTH else data

    @staticmethod
    def _relay_body(
        handler: BaseHTTPRequestHandler,
        upstream: http.client.HTTPResponse,
        mask: Callable[[bytes], bytes],
    ) -> tuple[int, int, str]:
        body = mask(upstream.read())
        handler.send_response(upstream.status)
        handler.send_header(
            "Content-Type", upstream.getheader("Content-Type") or "application/json"
        )
        for name in ("Retry-After", "retry-after-ms"):
            if upstream.getheader(name):
                handler.send_header(name, upstream.getheader(name) or "")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        try:
            parsed = json.loads(body)
        except ValueError:
            return 0, 0, body[:SUMMARY_CHARS].decode(errors="replace")
        if not isinstance(parsed, dict):
            return 0, 0, ""
        if upstream.status != 200:
            return 0, 0, json.dumps(parsed.get("error", parsed))
        return (*_usage(parsed), _text(parsed))

    @staticmethod
    def _relay_stream(
        handler: BaseHTTPRequestHandler,
        upstream: http.client.HTTPResponse,
        mask: Callable[[bytes], bytes],
    ) -> tuple[int, int, str]:
        """Pass each server-sent event on as it arrives, reading usage and text from it."""
        handler.send_response(upstream.status)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()  # HTTP/1.0: the body ends when the connection closes
        tokens_in = tokens_out = 0
        text: list[str] = []
        for raw in upstream:
            line = mask(raw)
            handler.wfile.write(line)
            handler.wfile.flush()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(data)
                if isinstance(event, dict):
                    found = _usage(event)
                    if found != (0, 0):
                        tokens_in, tokens_out = found
                    if sum(len(t) for t in text) < SUMMARY_CHARS:
                        text.append(_text(event))
        return tokens_in, tokens_out, "".join(text)
