"""One way out of a sandbox without network: a forwarder to one endpoint's host:port.

An agent CLI under bwrap runs with no network of its own (`--unshare-net`: a loopback
of its own, nothing of the host's). Its one way out is a Unix socket bound into the
sandbox: inside, `bridge.py` listens on the sandbox's 127.0.0.1 at the endpoint's port
and relays each connection to that socket; on the host, `EndpointForwarder` takes
each connection on the socket and opens a TCP connection to the endpoint's host and
port, and to nothing else, whatever the CLI sends. It relays bytes, so TLS stays end to
end between the CLI and the endpoint: the CLI keeps the endpoint's real hostname (for
SNI and the certificate), which the sandbox's own `/etc/hosts` maps to 127.0.0.1.

A port below 1024 cannot be listened on inside (the sandbox has no capabilities), so
there the bridge listens on `PRIVILEGED_SHIFT` + port (443 becomes 10443) and the CLI's
base URL names that port; the HTTP `Host` header then carries it too
(`api.anthropic.com:10443`), which the endpoint sees. An IP literal stays as it is
(IPv6 ones become 127.0.0.1 inside, where the bridge listens).
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import socket
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ratchet.errors import UsageError
from ratchet.sandbox.bridge import relay

BRIDGE = Path(__file__).with_name("bridge.py")  # the sandbox's end of the socket
PRIVILEGED_SHIFT = 10_000
CONNECT_TIMEOUT = 30.0  # seconds to open the connection to the endpoint
SOCKET_NAME = "endpoint.sock"
HOSTS_NAME = "hosts"


@dataclass(frozen=True)
class Endpoint:
    """Where the forwarder connects (`host`, `port`) and how the CLI inside names it."""

    url: str
    host: str
    port: int
    inside_port: int
    inside_host: str

    @classmethod
    def of(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"[proposer] base_url: {url!r} is not an http:// or https:// URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UsageError(f"[proposer] base_url: {url!r} has a port out of range") from None
        inside_port = port if port >= 1024 else PRIVILEGED_SHIFT + port
        host = parts.hostname
        inside_host = host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                inside_host = "127.0.0.1"  # the bridge listens on IPv4
        return cls(url, host, port, inside_port, inside_host)

    @property
    def inside_url(self) -> str:
        """The base URL the CLI is given: the same, at the port the bridge listens on."""
        parts = urlsplit(self.url)
        netloc = f"{self.inside_host}:{self.inside_port}"
        if parts.username or parts.password:
            netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def hosts_file(self) -> str:
        """The sandbox's `/etc/hosts`: the endpoint's name (and localhost) at 127.0.0.1."""
        names = dict.fromkeys(["localhost", self.inside_host])
        try:
            ipaddress.ip_address(self.inside_host)
            names.pop(self.inside_host)
        except ValueError:
            pass
        return f"127.0.0.1 {' '.join(names)}\n"


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class EndpointForwarder:
    """The host's end: a Unix socket in `folder` whose every connection goes on to the
    endpoint's host:port; beside it, the sandbox's hosts file. A context manager."""

    def __init__(self, endpoint: Endpoint, folder: Path) -> None:
        self.endpoint = endpoint
        self.socket_path = folder / SOCKET_NAME
        self.hosts_path = folder / HOSTS_NAME
        self.hosts_path.write_text(endpoint.hosts_file())
        target = (endpoint.host, endpoint.port)
        self.open: set[socket.socket] = set()  # closed at the end: a stalled endpoint
        lock = threading.Lock()  # would otherwise keep a relay waiting after the CLI is gone
        live = self.open

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
                except OSError:
                    return  # the CLI sees its connection closed and reports it
                upstream.settimeout(None)
                with lock:
                    live.update((self.request, upstream))
                relay(self.request, upstream)
                with lock:
                    live.difference_update((self.request, upstream))

        self.lock = lock

        self.server = _UnixServer(str(self.socket_path), Handler)
        self.socket_path.chmod(0o666)  # the sandbox's user is `nobody`
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EndpointForwarder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        with self.lock:
            for connection in self.open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)  # wakes the relay's threads


def bridge_command(python: str, unix_socket: Path, command: str, port: int) -> str:
    """A shell line that runs `command` (a shell line) behind the bridge listening on
    the sandbox's 127.0.0.1:`port`; the bridge file and the socket must be visible in
    the sandbox at their own paths."""
    return shlex.join([python, "-I", str(BRIDGE), "--port", str(port), str(unix_socket),
                       "--", "/bin/sh", "-c", command])  # fmt: skip
