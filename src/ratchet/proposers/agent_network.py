"""An agent CLI's network: under bwrap, only its configured endpoint.

Under the bwrap layer the CLI runs without network (`BwrapSandbox.confined`), and its
one way out is `ratchet.sandbox.forward`: a Unix socket bound into the sandbox, relayed
on the host to the endpoint's host:port only. The endpoint is `[proposer] base_url`, or
the CLI's own default (Anthropic's API for Claude Code, OpenAI's for codex); aider
without `base_url` picks its provider from the model's name, so it keeps the shared
network. `[proposer] network = true` shares the host's network instead, on purpose;
`network = false` leaves the CLI none at all. The process layer enforces nothing (the
CLI reaches whatever the host does); docker gives the container a network bridge.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ratchet.errors import RunError
from ratchet.proposers.reach import unreachable
from ratchet.sandbox import Sandbox
from ratchet.sandbox.bwrap import BwrapSandbox
from ratchet.sandbox.forward import BRIDGE, Endpoint, EndpointForwarder, bridge_command
from ratchet.specmodel import ProposerSpec

DEFAULT_ENDPOINTS = {"claude-code": "https://api.anthropic.com",
                     "codex": "https://api.openai.com/v1"}  # fmt: skip


def endpoint_of(spec: ProposerSpec) -> str | None:
    """The one endpoint the CLI talks to, where ratchet knows it."""
    return spec.base_url or DEFAULT_ENDPOINTS.get(spec.kind)


def check_endpoint(spec: ProposerSpec) -> None:
    """Before the baseline: a `base_url` the forwarder could not relay to is a usage
    error, and one no connection opens to stops the run (every proposal of the night
    would be invalid). Without `base_url` the CLI's hosted default is not checked."""
    if spec.base_url is None:
        return
    Endpoint.of(spec.base_url)
    why = unreachable(spec.base_url)
    if why is not None:
        raise RunError(f"the {spec.kind} proposer cannot reach its endpoint {spec.base_url} "
                       f"({why}); start the model's server or fix [proposer] base_url")  # fmt: skip


def _unconfined(sandbox: Sandbox, spec: ProposerSpec) -> str:
    if sandbox.name == "process":
        return "the host's network (the process layer limits nothing)"
    if spec.network is False:
        return "none"
    return "a docker bridge network" if sandbox.name == "docker" else "the host's network"


@contextmanager
def endpoint_only(
    sandbox: Sandbox, spec: ProposerSpec
) -> Iterator[tuple[Sandbox, ProposerSpec, Callable[[str], str], str]]:
    """The sandbox, spec and command wrapper to run one proposal's CLI with, and a line
    on its network for the proposal's record; the forwarder runs while inside."""
    url = endpoint_of(spec)
    if not isinstance(sandbox, BwrapSandbox) or spec.network is not None or url is None:
        yield sandbox, spec, (lambda command: command), _unconfined(sandbox, spec)
        return
    endpoint = Endpoint.of(url)
    # not the run's state folder: a Unix socket's path may not pass 107 bytes
    folder = Path(tempfile.mkdtemp(prefix="ratchet-endpoint-"))
    try:
        with EndpointForwarder(endpoint, folder) as forwarder:
            confined = sandbox.confined([BRIDGE, forwarder.socket_path], forwarder.hosts_path)
            inside = spec.model_copy(update={"base_url": endpoint.inside_url})

            def wrap(command: str) -> str:
                return bridge_command(sys.executable, forwarder.socket_path, command,
                                      endpoint.inside_port)  # fmt: skip

            yield confined, inside, wrap, f"only {endpoint.host}:{endpoint.port}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
