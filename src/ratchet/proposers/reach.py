"""Whether a proposer's endpoint can be reached at the run's start.

A model's server that is down at the start would make every proposal of the night
invalid; the `llm` proposer and the agent CLIs check their endpoint once, before the
baseline, and stop the run naming the URL.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the endpoint, at the run's start
_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")


def unreachable(url: str) -> str | None:
    """Why `url`'s host:port cannot be reached now (no connection opens), or None.

    Only a TCP connection is opened: no request, no key, no cost. Behind a proxy (the
    SDKs and the CLIs honour *_PROXY) the endpoint is not checked: the proxy decides
    what is reached.
    """
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARIABLES):
        return None
    parts = urlsplit(url)
    if parts.hostname is None:
        return f"{parts.geturl()} names no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        return error.strerror or type(error).__name__
    return None
