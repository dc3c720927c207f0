"""A real run for the report and dashboard tests, and a dashboard served for real.

The proposer sets X in value.py to the next value of a fixed list, saying so in a
rationale full of hostile text; the metric is (X - 2)^2 and fails for X = 0. Over six
experiments that gives: #1 the baseline (9), #2 keep (4), #3 keep (1), #4 discard (25),
#5 keep (0), #6 crash, #7 discard (1). With a gate folder, the proposer waits before
proposal n until the file `go-n` is there: a test lets experiments through one by one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import GIT_ENV, make_project

HOSTILE = '<script>window.pwned = 1</script> <img src=x onerror="window.pwned=2"> | $x$ *b*'
VALUES = [4, 3, 7, 2, 0, 1]

PROPOSE = f"""
import pathlib, sys, time
counter, gate = pathlib.Path(sys.argv[1]), sys.argv[2]
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
if gate != "-":
    while not pathlib.Path(gate, f"go-{{n}}").exists():
        time.sleep(0.02)
x = {VALUES!r}[n % {len(VALUES)}]
pathlib.Path("value.py").write_text(f"X = {{x}}\\n")
print(f"X to {{x}}: " + {HOSTILE!r})
"""

SCORE = """
from value import X
if X == 0:
    raise SystemExit("X = 0 is not allowed")
print(f"score: {(X - 2) ** 2}")
"""

SPEC = """
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = "{python} score.py"
name = "score"
goal = "minimize"
budget = "30s"
[run]
max_experiments = {max_experiments}
[proposer]
kind = "command"
command = "{python} {propose} {counter} {gate}"
budget = "300s"
"""


def view_project(tmp: Path, max_experiments: int = 6, gate: Path | None = None) -> Path:
    """A project whose run goes as the module docstring says (not run yet)."""
    tools = tmp / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    (tools / "propose.py").write_text(PROPOSE)
    spec = SPEC.format(python=sys.executable, propose=tools / "propose.py",
                       counter=tools / "count", gate=gate or "-",
                       max_experiments=max_experiments)  # fmt: skip
    return make_project(tmp / "project", {"value.py": "X = 5\n", "score.py": SCORE}, spec)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dashboard(project: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`ratchet dashboard` on a free loopback port; returns once it accepts connections."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "ratchet", "dashboard", "--port", str(port), *args],
        cwd=project, env={**os.environ, **GIT_ENV}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(
                f"the dashboard exited: {child.stdout.read() if child.stdout else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return child, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)  # waiting for the port to accept: no event to wait on
    child.kill()
    raise AssertionError("the dashboard did not start listening within 120 s")


def stop(child: subprocess.Popen[str]) -> None:
    child.terminate()
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
