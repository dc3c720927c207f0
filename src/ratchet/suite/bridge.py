"""The sandbox's end of the metering proxy: run an agent whose only way out is a socket.

    python bridge.py SOCKET -- COMMAND [ARG...]

Under bwrap without network the agent has a loopback of its own, on which nothing of
the host can be reached. This script, run inside the sandbox, listens on that
loopback (127.0.0.1, a free port), relays each connection to the Unix socket SOCKET
(the metering proxy's, bound into the sandbox), runs COMMAND with `OPENAI_BASE_URL`
pointing at its port, and exits with COMMAND's status. So the proxy is the one
address the agent can reach.

Standard library only, and nothing of ratchet: it runs with whatever Python the
sandbox shows, from wherever the file is bound.
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


def _relay(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_relay, args=(client, path), daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: bridge.py SOCKET -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    path, command = argv[0], argv[2:]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=_serve, args=(listener, path), daemon=True).start()
    env = {**os.environ, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    try:
        return subprocess.call(command, env=env)
    except OSError as error:
        print(f"bridge.py: cannot run {command[0]}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
