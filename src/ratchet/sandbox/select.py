"""Choosing an isolation layer: the one asked for, or with `auto` the strongest that works.

Each layer proves itself with a self-check before it is used, because a sandbox that
silently does nothing (bwrap inside an unprivileged container, a CLI without a daemon)
is worse than the weaker layer named plainly. The checks are cached per process.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from ratchet.errors import UsageError
from ratchet.sandbox import ProcessSandbox, Sandbox
from ratchet.sandbox.bwrap import BwrapSandbox
from ratchet.sandbox.docker import DockerSandbox, daemon_check

KINDS = ("auto", "process", "bwrap", "docker")
PROCESS_NOTE = "own process group, budget kill, capped output, scrubbed environment"


def choose_sandbox(
    kind: str,
    protected: list[str],
    network: bool = False,
    image: str | None = None,
    *,
    cpus: float | None = None,
    memory: int | None = None,
    pids: int = 4096,
    gpus: Sequence[int] = (),
    expose: Sequence[str | Path] = (),
) -> tuple[Sandbox, str]:
    """The layer for `kind` and a one-line note on why it was taken.

    `auto` tries docker (only with an image), then bwrap, then settles for process, and
    the note names what was passed over and why. An explicit kind whose self-check fails
    is a UsageError: the user asked for isolation this machine cannot give.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown sandbox kind {kind!r} (choose from {', '.join(KINDS)})")
    if kind == "process":
        return ProcessSandbox(memory), f"process ({PROCESS_NOTE})"
    if kind == "docker" and not image:
        raise UsageError("sandbox kind 'docker' needs an image to run")
    candidates: list[DockerSandbox | BwrapSandbox] = []
    if image and kind in ("auto", "docker"):
        docker_memory = f"{memory}b" if memory is not None else None
        candidates.append(
            DockerSandbox(image, network, cpus, docker_memory, pids, gpus, protected, expose=expose)
        )
    if kind in ("auto", "bwrap"):
        candidates.append(BwrapSandbox(protected, network, expose=expose, memory=memory))
    passed_over: list[str] = []
    for sandbox in candidates:
        ok, why = sandbox.self_check()
        if ok:
            return sandbox, "; ".join([f"{sandbox.name} ({why})", *passed_over])
        if kind != "auto":
            raise UsageError(f"sandbox {kind!r} is not usable here: {why}")
        passed_over.append(f"{sandbox.name} unavailable ({why})")
    return ProcessSandbox(memory), "process: " + "; ".join(passed_over)


def doctor_report(image: str | None = None, network: bool = False) -> list[tuple[str, bool, str]]:
    """Each layer's name, whether it works here, and why; for `ratchet doctor`."""
    report = [("process", True, f"always available: {PROCESS_NOTE}")]
    bwrap = BwrapSandbox([], network)
    bwrap_ok, bwrap_why = bwrap.self_check()
    proofs = bwrap.proofs()
    report.append(("bwrap", bwrap_ok, f"{bwrap_why}: {'; '.join(proofs)}" if proofs else bwrap_why))
    if image:
        report.append(("docker", *DockerSandbox(image, network).self_check()))
    else:
        ok, why = daemon_check(shutil.which("docker") or "docker")
        why = f"{why}; no image configured, so auto never picks it" if ok else why
        report.append(("docker", ok, why))
    return report
