"""The sandbox's end of a forwarder: run a command whose only way out is a Unix socket.

    python bridge.py [--port PORT] SOCKET -- COMMAND [ARG...]

Under bwrap without network the command has a loopback of its own, on which nothing of
the host can be reached. This script, run inside the sandbox, listens on that
loopback (127.0.0.1, PORT or a free port), relays each connection to the Unix socket
SOCKET (bound into the sandbox; on the host, ratchet's end listens on it), runs COMMAND
and exits with COMMAND's status. So what listens on SOCKET is the one address the
command can reach. Without `--port` it sets `OPENAI_BASE_URL` to its free port (the
harness mode's metering proxy); with one, the caller has already pointed the command at
that port (`ratchet.sandbox.forward`, the agent CLIs' endpoint).

Standard library only, and nothing of ratchet: it runs with whatever Python the
sandbox shows, from wherever the file is bound. ratchet's host end imports `relay`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading

CHUNK = 1 << 16


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)  # the other way may still be talking


def relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until both sides are done, then close both."""
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _relay_to(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    relay(client, upstream)


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_relay_to, args=(client, path), daemon=True).start()


def main(argv: list[str]) -> int:
    port = None
    if len(argv) > 1 and argv[0] == "--port" and argv[1].isdigit():
        port, argv = int(argv[1]), argv[2:]
    if len(argv) < 3 or argv[1] != "--":
        print("usage: bridge.py [--port PORT] SOCKET -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    path, command = argv[0], argv[2:]
    try:
        listener = socket.create_server(("127.0.0.1", port or 0))
    except OSError as error:
        print(f"bridge.py: cannot listen on 127.0.0.1:{port}: {error}", file=sys.stderr)
        return 2
    threading.Thread(target=_serve, args=(listener, path), daemon=True).start()
    env = dict(os.environ)
    if port is None:
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        return subprocess.call(command, env=env)
    except OSError as error:
        print(f"bridge.py: cannot run {command[0]}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
