"""The local runner's meter: a metering proxy (proxy.py) in front of each trial's agent.

Plugged in through `local.Meter` when the task agent is allowed an OpenAI key (`[suite]
env` names `OPENAI_API_KEY` and it is set): the upstream is the agent's own
`OPENAI_BASE_URL` (OpenAI's when unset) and key; the agent gets the proxy's address and
a dummy key, so the real key never enters its sandbox. Each trial's calls are recorded
in its folder (`model_calls.jsonl`); its spend cap is what is left of `max_cost_usd`.

Under bwrap without network the agent has no way to the host's loopback: the proxy
then listens on a Unix socket too, bound into the sandbox with the bridge (`bridge.py`),
which runs in front of the agent and relays its own loopback to the socket.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from ratchet.sandbox.forward import BRIDGE
from ratchet.suite.local import AgentSession
from ratchet.suite.proxy import DUMMY_API_KEY, MODEL_CALLS, MeteringProxy, bridge_command

KEY = "OPENAI_API_KEY"
BASE_URL = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def wants_meter(allowed: list[str], env: Mapping[str, str]) -> bool:
    """Whether trials are metered: the agent may have an OpenAI key, and one is set."""
    return KEY in allowed and bool(env.get(KEY))


class ProxyMeter:
    """`local.Meter`: one MeteringProxy per trial. `left_usd` is what is left of the
    run's `max_cost_usd` when a batch of trials starts (None: no cap); the trials of a
    batch share it."""

    def __init__(
        self,
        prices: dict[str, dict[str, float]],
        python: str,
        bridge: bool = False,
    ) -> None:
        self.prices, self.python, self.bridge = prices, python, bridge
        self.left_usd: float | None = None
        self.spent_usd = 0.0  # metered in this batch
        self.lock = threading.Lock()

    def start_batch(self, left_usd: float | None) -> None:
        with self.lock:
            self.left_usd, self.spent_usd = left_usd, 0.0

    def _cap(self) -> float | None:
        with self.lock:
            return None if self.left_usd is None else max(0.0, self.left_usd - self.spent_usd)

    @contextlib.contextmanager
    def __call__(self, folder: Path, env: Mapping[str, str]) -> Iterator[AgentSession]:
        upstream = env.get(BASE_URL) or DEFAULT_BASE_URL
        socket_dir = Path(tempfile.mkdtemp(prefix="ratchet-proxy-")) if self.bridge else None
        unix_socket = socket_dir / "proxy.sock" if socket_dir is not None else None
        try:
            with MeteringProxy(upstream, env.get(KEY, ""), self.prices, self._cap(),
                               folder / MODEL_CALLS, unix_socket=unix_socket) as proxy:  # fmt: skip
                session = AgentSession(
                    env={BASE_URL: proxy.base_url, KEY: DUMMY_API_KEY},
                    usage=proxy.usage,
                    check=proxy.check_reported,
                )
                if unix_socket is not None and socket_dir is not None:
                    session.wrap = lambda command: bridge_command(self.python, unix_socket, command)
                    session.binds = [(False, socket_dir, socket_dir), (True, BRIDGE, BRIDGE)]
                try:
                    yield session
                finally:
                    spent = proxy.usage()
                    with self.lock:
                        self.spent_usd += spent.cost_usd
        finally:
            if socket_dir is not None:
                shutil.rmtree(socket_dir, ignore_errors=True)
