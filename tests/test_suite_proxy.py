"""The metering proxy, with the real openai SDK as the task agent and the scripted
fake server as the model's endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from fake_llm import FakeLLM, error, tool_call

from ratchet.suite.proxy import DEFAULT_PRICE, DUMMY_API_KEY, MeteringProxy, check_reported
from ratchet.suite.trials import TrialUsage

REAL_KEY = "sk-real-secret-4f1c9a"
PRICES = {"fake-model": {"input": 2.0, "output": 10.0}}  # dollars per million tokens
ONE_CALL = (100 * 2.0 + 10 * 10.0) / 1e6  # the fake server's usage: 100 in, 10 out


def agent(proxy: MeteringProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=DUMMY_API_KEY, max_retries=0)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_plain_call_is_forwarded_with_the_real_key_and_metered(tmp_path: Path) -> None:
    record = tmp_path / "model_calls.jsonl"
    with (
        FakeLLM([{"content": "hello there"}, tool_call("shell", cmd="ls")]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES, None, record) as proxy,
    ):
        assert proxy.base_url.startswith("http://127.0.0.1:")
        client = agent(proxy)
        reply = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "say hello"}]
        )
        second = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "list files"}]
        )
    assert reply.choices[0].message.content == "hello there"
    assert second.choices[0].message.tool_calls is not None
    # the model's endpoint saw the real key; the agent only ever held the dummy one
    assert [h["authorization"] for h in fake.headers] == [f"Bearer {REAL_KEY}"] * 2
    assert fake.requests[0]["messages"][0]["content"] == "say hello"
    usage = proxy.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.calls) == (200, 20, 2)
    assert usage.cost_usd == pytest.approx(2 * ONE_CALL)
    calls = records(record)
    assert [c["request"] for c in calls] == ["say hello", "list files"]
    assert calls[0]["reply"] == "hello there" and "[tool shell]" in str(calls[1]["reply"])
    assert all(c["model"] == "fake-model" and c["priced"] and c["status"] == 200 for c in calls)
    assert all(isinstance(c["latency_s"], float) and c["latency_s"] >= 0 for c in calls)


def test_a_streamed_call_arrives_whole_and_its_usage_is_metered(tmp_path: Path) -> None:
    with (
        FakeLLM([{"content": "streamed words"}]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES, None, tmp_path / "r.jsonl") as proxy,
    ):
        stream = agent(proxy).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "go"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "streamed words"
    # the agent did not ask for usage; the proxy did, so the stream could be metered
    assert fake.requests[0]["stream_options"] == {"include_usage": True}
    assert proxy.usage() == TrialUsage(100, 10, pytest.approx(ONE_CALL), 1)
    assert proxy.calls[0].stream and proxy.calls[0].reply == "streamed words"


def test_the_responses_api_is_forwarded_and_metered(tmp_path: Path) -> None:
    with (
        FakeLLM([{"content": "a response"}]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES) as proxy,
    ):
        response = agent(proxy).responses.create(model="fake-model", input="hi")
    assert response.output_text == "a response"
    assert fake.headers[0]["authorization"] == f"Bearer {REAL_KEY}"
    assert proxy.calls[0].route == "/responses"
    assert (proxy.usage().input_tokens, proxy.usage().output_tokens) == (100, 10)


def test_the_spend_cap_refuses_further_calls_with_an_error_the_agent_sees(
    tmp_path: Path,
) -> None:
    record = tmp_path / "calls.jsonl"
    cap = 1.5 * ONE_CALL  # the second call crosses it; the third is refused
    script = [{"content": "one"}, {"content": "two"}, {"content": "three"}]
    with (
        FakeLLM(script) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES, cap, record) as proxy,
    ):
        client = agent(proxy)
        ask = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
        client.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert not proxy.capped
        client.chat.completions.create(**ask)  # type: ignore[call-overload]
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(**ask)  # type: ignore[call-overload]
    assert refused.value.status_code == 402
    assert "spend cap" in str(refused.value)
    assert proxy.capped
    assert len(fake.requests) == 2  # the refused call never reached the model
    assert proxy.usage().calls == 2
    assert [c["status"] for c in records(record)] == [200, 200, 402]


def test_an_unpriced_model_is_charged_the_documented_default(tmp_path: Path) -> None:
    with (
        FakeLLM([{"content": "x"}]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES) as proxy,
    ):
        agent(proxy).chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": "x"}]
        )
    expected = (100 * DEFAULT_PRICE["input"] + 10 * DEFAULT_PRICE["output"]) / 1e6
    assert proxy.calls[0].cost_usd == pytest.approx(expected)
    assert not proxy.calls[0].priced


def test_an_upstream_error_reaches_the_agent_and_is_recorded(tmp_path: Path) -> None:
    with (
        FakeLLM([error(500)]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES) as proxy,
        pytest.raises(openai.InternalServerError),
    ):
        agent(proxy).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}]
        )
    assert proxy.calls[0].status == 500 and "slow down" in proxy.calls[0].reply
    assert proxy.usage().calls == 0


def test_an_unreachable_model_is_a_502_the_agent_sees(tmp_path: Path) -> None:
    with FakeLLM([]) as fake:
        url = fake.base_url  # a port nothing listens on once the server is closed
    with (
        MeteringProxy(url, REAL_KEY, PRICES) as proxy,
        pytest.raises(openai.InternalServerError) as failed,
    ):
        agent(proxy).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}]
        )
    assert failed.value.status_code == 502
    assert proxy.calls[0].status == 502


def test_other_paths_are_not_forwarded(tmp_path: Path) -> None:
    with (
        FakeLLM([]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES) as proxy,
        pytest.raises(openai.NotFoundError),
    ):
        agent(proxy).embeddings.create(model="fake-model", input="x")
    assert fake.requests == []


def test_an_agent_process_never_holds_the_real_key(tmp_path: Path) -> None:
    """The agent runs as its own process with the proxy's address and the dummy key;
    its environment and everything it prints lack the real key, which the model's
    endpoint still receives."""
    script = (
        "import json, os, openai\n"
        "client = openai.OpenAI(max_retries=0)\n"
        "reply = client.chat.completions.create(model='fake-model',"
        " messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(json.dumps({'env': dict(os.environ), 'reply': reply.choices[0].message.content}))\n"
    )
    env = {k: v for k, v in os.environ.items() if "KEY" not in k.upper()}
    with (
        FakeLLM([{"content": "hi back"}]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES) as proxy,
    ):
        env.update(OPENAI_BASE_URL=proxy.base_url, OPENAI_API_KEY=DUMMY_API_KEY)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
    assert REAL_KEY not in done.stdout + done.stderr
    seen = json.loads(done.stdout)
    assert seen["reply"] == "hi back"
    assert REAL_KEY not in json.dumps(seen["env"])
    assert fake.headers[0]["authorization"] == f"Bearer {REAL_KEY}"


def test_check_reported_compares_an_agents_claim_with_the_meter() -> None:
    metered = TrialUsage(input_tokens=1000, output_tokens=200, cost_usd=0.01, calls=4)
    assert check_reported(metered, metered) == ""
    assert check_reported(TrialUsage(1010, 200, 0.01, 4), metered) == ""  # within 5%
    why = check_reported(TrialUsage(100, 20, 0.001, 1), metered)
    assert "input_tokens 100 reported, 1000 metered" in why
    assert "calls 1 reported, 4 metered" in why


def test_concurrent_calls_are_all_forwarded_and_metered(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    record = tmp_path / "calls.jsonl"
    with (
        FakeLLM([{"content": f"reply {n}"} for n in range(8)]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES, None, record) as proxy,
    ):
        client = agent(proxy)

        def ask(n: int) -> str:
            reply = client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": f"q{n}"}]
            )
            return reply.choices[0].message.content or ""

        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(ask, range(8)))
    assert sorted(replies) == sorted(f"reply {n}" for n in range(8))
    assert proxy.usage() == TrialUsage(800, 80, pytest.approx(8 * ONE_CALL), 8)
    assert sorted(c["request"] for c in records(record)) == [f"q{n}" for n in range(8)]


AGENT_BEHIND_BRIDGE = """
import json, os, socket, urllib.parse, openai
reply = openai.OpenAI(max_retries=0).chat.completions.create(
    model="fake-model", messages=[{"role": "user", "content": "through the bridge"}])
host_port = int(os.environ["HOST_PROXY_PORT"])
try:
    socket.create_connection(("127.0.0.1", host_port), timeout=5).close()
    direct = "connected"
except OSError:
    direct = "refused"
print(json.dumps({"reply": reply.choices[0].message.content, "direct": direct,
                  "base_url": os.environ["OPENAI_BASE_URL"]}))
"""


def run_behind_bridge(tmp_path: Path, sandboxed: bool) -> tuple[dict[str, str], FakeLLM]:
    from ratchet.environment import child_environment
    from ratchet.sandbox.bwrap import BwrapSandbox
    from ratchet.sandbox.process import ProcessSandbox
    from ratchet.suite.proxy import BRIDGE, bridge_command

    work = tmp_path / "work"
    work.mkdir()
    (work / "agent.py").write_text(AGENT_BEHIND_BRIDGE)
    private = tmp_path / "p"
    private.mkdir(mode=0o700)
    socket_path = private / "model.sock"
    with (
        FakeLLM([{"content": "bridged"}]) as fake,
        MeteringProxy(fake.base_url, REAL_KEY, PRICES, unix_socket=socket_path) as proxy,
    ):
        port = proxy.base_url.rsplit(":", 1)[1].split("/")[0]
        env = child_environment(extra={"OPENAI_API_KEY": DUMMY_API_KEY, "HOST_PROXY_PORT": port})
        command = bridge_command(sys.executable, socket_path, f"{sys.executable} agent.py")
        sandbox = (BwrapSandbox([], network=False, expose=[BRIDGE, socket_path]) if sandboxed
                   else ProcessSandbox())  # fmt: skip
        result = sandbox.run(command, work, env, 120, 5)
    assert result.returncode == 0, result.output[-2000:]
    assert proxy.usage().calls == 1
    last = result.output.strip().splitlines()[-1]
    return json.loads(last), fake


def test_the_bridge_relays_an_agent_to_the_proxys_socket(tmp_path: Path) -> None:
    seen, fake = run_behind_bridge(tmp_path, sandboxed=False)
    assert seen["reply"] == "bridged"
    assert fake.headers[0]["authorization"] == f"Bearer {REAL_KEY}"
    assert seen["base_url"].startswith("http://127.0.0.1:")
    assert seen["direct"] == "connected"  # unsandboxed, the host's loopback is reachable


def test_under_bwrap_the_proxy_is_the_only_address_the_agent_reaches(tmp_path: Path) -> None:
    from conftest import layer_or_skip

    layer_or_skip("bwrap")
    seen, fake = run_behind_bridge(tmp_path, sandboxed=True)
    assert seen["reply"] == "bridged"  # through the bridge and the socket
    assert seen["direct"] == "refused"  # the host's loopback, the proxy's TCP port included
    assert fake.requests[0]["messages"][0]["content"] == "through the bridge"
    assert fake.headers[0]["authorization"] == f"Bearer {REAL_KEY}"


class EchoingEndpoint:
    """A careless endpoint that puts the key it was sent into its reply."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                echoed = f"you sent {self.headers['Authorization']}"
                if request.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    chunk = {"id": "e", "object": "chat.completion.chunk", "created": 0,
                             "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                                        "delta": {"content": echoed}}]}  # fmt: skip
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
                    return
                body = json.dumps({"error": {"message": f"bad key: {echoed}"}}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def test_a_key_the_endpoint_echoes_never_reaches_the_agent(tmp_path: Path) -> None:
    endpoint = EchoingEndpoint()
    record = tmp_path / "calls.jsonl"
    try:
        with MeteringProxy(endpoint.base_url, REAL_KEY, PRICES, None, record) as proxy:
            client = agent(proxy)
            ask = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            with pytest.raises(openai.AuthenticationError) as refused:
                client.chat.completions.create(**ask)  # type: ignore[call-overload]
            stream = client.chat.completions.create(**ask, stream=True)  # type: ignore[call-overload]
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
    assert "you sent Bearer ***" in str(refused.value.body)
    assert streamed == "you sent Bearer ***"
    assert REAL_KEY not in str(refused.value.body) + streamed + record.read_text()
