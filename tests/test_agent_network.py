"""An agent CLI's network under bwrap: only its configured endpoint, through a forwarder.

The CLI's sandbox has no network (`--unshare-net`); `bridge.py` inside listens on the
endpoint's port of the sandbox's own loopback and relays to a Unix socket, and the
host's end of it connects to the endpoint's host:port only. A tiny command run through
the same set-up as the CLI reaches the endpoint and nothing else on the host's loopback;
tests/test_agent_clis_real.py runs the real Claude Code and codex this way.
"""

from __future__ import annotations

import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import experiments, layer_or_skip, make_project, ratchet
from ratchet.errors import UsageError
from ratchet.proposers.agent_network import endpoint_only
from ratchet.sandbox import ProcessSandbox
from ratchet.sandbox.bwrap import BwrapSandbox
from ratchet.sandbox.forward import Endpoint
from ratchet.spec import ProposerSpec

PROBE = """
import socket, sys, urllib.request
url, other = sys.argv[1], int(sys.argv[2])
print("hosts:", open("/etc/hosts").read().strip())
print("endpoint:", urllib.request.urlopen(url + "/ping", timeout=5).read().decode())
try:
    socket.create_connection(("127.0.0.1", other), timeout=2).close()
    print("other:connected")
except OSError as error:
    print("other:refused", error)
"""


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"pong {self.path} host={self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_inside_url_keeps_the_name_and_moves_a_privileged_port() -> None:
    https = Endpoint.of("https://api.anthropic.com")
    assert (https.host, https.port) == ("api.anthropic.com", 443)
    assert https.inside_url == "https://api.anthropic.com:10443"  # the certificate's name kept
    assert https.hosts_file() == "127.0.0.1 localhost api.anthropic.com\n"
    local = Endpoint.of("http://127.0.0.1:8123/v1")
    assert local.inside_url == "http://127.0.0.1:8123/v1"
    assert local.hosts_file() == "127.0.0.1 localhost\n"
    six = Endpoint.of("http://[::1]:4000/v1")
    assert (six.host, six.inside_url) == ("::1", "http://127.0.0.1:4000/v1")
    for bad in ("ftp://example.com", "http://", "http://h:99999/"):
        with pytest.raises(UsageError, match="base_url"):
            Endpoint.of(bad)


def test_only_the_endpoint_is_reachable_from_the_sandbox(tmp_path: Path, endpoint: int) -> None:
    layer_or_skip("bwrap")
    spec = ProposerSpec(kind="claude-code", base_url=f"http://localhost:{endpoint}")
    host_sandbox = BwrapSandbox([], network=True)  # what the engine gives an agent CLI
    with socket.create_server(("127.0.0.1", 0)) as other:
        other.setblocking(False)
        with endpoint_only(host_sandbox, spec) as (sandbox, inside, wrap, line):
            assert isinstance(sandbox, BwrapSandbox) and not sandbox.network
            assert line == f"only localhost:{endpoint}"
            command = wrap(shlex.join([sys.executable, "-c", PROBE, str(inside.base_url),
                                       str(other.getsockname()[1])]))  # fmt: skip
            env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
            result = sandbox.run(command, tmp_path, env, budget=30, grace=1)
            assert sandbox.hosts is not None
            folder = sandbox.hosts.parent  # the socket and the hosts file
        assert not folder.exists()  # gone with the proposal
        assert result.returncode == 0, result.output
        assert f"endpoint: pong /ping host=localhost:{endpoint}" in result.output
        assert "hosts: 127.0.0.1 localhost" in result.output
        assert "other:refused" in result.output and "other:connected" not in result.output
        with pytest.raises(BlockingIOError):
            other.accept()  # nothing reached the second listener
    assert not host_sandbox.hosts and host_sandbox.network  # the engine's sandbox unchanged


def test_the_endpoint_down_is_a_closed_connection_inside(tmp_path: Path) -> None:
    layer_or_skip("bwrap")
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # closed below: nothing listens there
    spec = ProposerSpec(kind="codex", base_url=f"http://127.0.0.1:{port}/v1")
    with endpoint_only(BwrapSandbox([], network=True), spec) as (sandbox, inside, wrap, _):
        probe = "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=5)"
        command = wrap(shlex.join([sys.executable, "-c", probe, str(inside.base_url)]))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
        result = sandbox.run(command, tmp_path, env, budget=30, grace=1)
    assert result.returncode != 0
    assert "RemoteDisconnected" in result.output or "Connection reset" in result.output, (
        result.output
    )


@pytest.mark.parametrize(
    ("sandbox", "network", "line"),
    [
        (ProcessSandbox(), None, "the host's network (the process layer limits nothing)"),
        (BwrapSandbox([], network=True), True, "the host's network"),
        (BwrapSandbox([], network=False), False, "none"),
    ],
)
def test_where_nothing_is_forwarded_the_record_says_so(
    sandbox: object, network: bool | None, line: str
) -> None:
    spec = ProposerSpec(kind="claude-code", network=network)
    with endpoint_only(sandbox, spec) as (same, same_spec, wrap, said):  # type: ignore[arg-type]
        assert same is sandbox and same_spec is spec and wrap("x") == "x"
        assert said == line


def test_aider_without_a_base_url_keeps_the_shared_network() -> None:
    spec = ProposerSpec(kind="aider", model="openai/gpt-4o")
    sandbox = BwrapSandbox([], network=True)
    with endpoint_only(sandbox, spec) as (same, _, _, said):
        assert same is sandbox and said == "the host's network"


BAD_ENDPOINT_SPEC = """
[scope]
editable = ["value.py"]
[metric]
command = "{python} -c 'print(\\"score: 1\\")'"
name = "score"
[run]
max_experiments = 1
[proposer]
kind = "claude-code"
executable = "/bin/true"
base_url = "ftp://models.example"
"""


def test_a_base_url_no_forwarder_can_reach_stops_the_run_before_it_starts(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", {"value.py": "X = 1\n"},
                           BAD_ENDPOINT_SPEC.format(python=sys.executable))  # fmt: skip
    result = ratchet(project, "run")
    assert result.returncode == 2, result.stderr
    assert "[proposer] base_url: 'ftp://models.example' is not an http:// or https:// URL" in (
        result.stderr
    )
    assert experiments(project) == []
