"""The Ray executor on a real local Ray cluster: candidates shipped as base tree + patch,
the budget and the protected files checked on the worker, lost workers retried once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import wait_for, wait_until

from conftest import experiments, git, make_project, ratchet
from ratchet.spec import MetricSpec, Spec, SpecError, parse_spec
from ratchet.workspace import Slot, ensure_slot

ray = pytest.importorskip(
    "ray", reason="the Ray executor needs Ray: pip install 'ratchet-loop[ray]'"
)

from ratchet.executors.ray import RayExecutor  # noqa: E402  (only once Ray is there)

PY = sys.executable
FILES = {
    "value.py": "X = 5\n",
    "score.py": """
        import os
        from value import X
        print("token hunter2 in the output")
        print(f"score: {(X - 2) ** 2}")
        print(f"seed: {os.environ['RATCHET_SEED']}")
        print(f"driver_gpus: {int(os.environ.get('CUDA_VISIBLE_DEVICES') == '7,8')}")
    """,
    "check.py": """
        import os
        from value import X
        print(f"x: {X}")
        print(f"new: {int(os.path.exists('new.txt'))}")
        print(f"old: {int(os.path.exists('old.txt'))}")
        print(f"blob: {sum(open('blob.bin', 'rb').read())}")
        print(f"exec: {int(os.access('run.sh', os.X_OK))}")
        print(f"link: {int(os.path.islink('link'))}")
        print(f"base_link: {int(os.readlink('base_link') == 'value.py')}")
    """,
    "attempt.py": """
        import os, sys, time
        marker, kills = sys.argv[1], int(sys.argv[2])
        with open(marker, "a") as handle:
            handle.write(f"{os.environ['RATCHET_WORKER_PID']} {os.getpid()}\\n")
        if len(open(marker).read().splitlines()) <= kills:
            time.sleep(60)
        print("score: 1")
    """,
    "old.txt": "old\n",
    "run.sh": "echo hi\n",
    "data/ref.txt": "reference\n",
}
ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
# moves X one step towards 2 each time
STEP = (
    f"{PY} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n')\""
)
ON_WORKER = {
    "score.py": """
    import os
    from value import X
    print(f"score: {(X - 2) ** 2}")
    print(f"on_worker: {int('RATCHET_WORKER_PID' in os.environ)}")
"""
}


def test_a_run_measures_on_ray(score_project: Callable[..., Path]) -> None:
    """First in the file: ratchet starts (and stops) a local cluster of its own."""
    spec = '[executor]\nkind = "ray"\nparallel = 2\n'
    project = score_project(STEP, max_experiments=4, files=ON_WORKER, extra=spec)
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["RAY_ADDRESS"] = "127.0.0.1:9"  # no `address`: a cluster of its own, not this one
    result = ratchet(project, "run", env=env)
    assert result.returncode == 0, result.stderr
    assert "stopped: reached max_experiments (4)" in result.stdout
    assert git(project, "show", "ratchet/default:value.py") != "X = 5"  # kept (2 slots race)
    assert len(experiments(project)) == 5
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    measured = [json.loads(row[0]) for row in db.execute("SELECT metrics FROM measurements")]
    db.close()
    assert measured and all(m["on_worker"] == 1 for m in measured)


def make_spec(**executor: Any) -> Spec:
    return parse_spec(
        {
            "scope": {"editable": ["value.py"], "protected": ["data"]},
            "metric": {"command": f"{PY} score.py", "name": "score", "budget": "20s"},
            "executor": {"kind": "ray", **executor},
        },
        "test",
    )


def metric(command: str, budget: str = "20s") -> MetricSpec:
    return MetricSpec.model_validate(
        {"command": command, "name": "score", "budget": budget, "grace": "0.5s"}
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # no token written under the home folder
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("ray") / "project", FILES)
    (root / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (root / "run.sh").chmod(0o644)
    (root / "base_link").symlink_to("value.py")
    git(root, "add", "blob.bin", "run.sh", "base_link")
    git(root, "commit", "-q", "-m", "blob")
    return root


@pytest.fixture(scope="module")
def slot(project: Path) -> Slot:
    return ensure_slot(project, 0, git(project, "rev-parse", "HEAD"))


@pytest.fixture(scope="module")
def executor(cluster: None, project: Path, slot: Slot) -> Iterator[RayExecutor]:
    ex = RayExecutor(make_spec(), project, sandbox=None)  # type: ignore[arg-type]
    assert not ex.started  # the module's cluster: the executor does not own it
    base = git(project, "rev-parse", "HEAD")
    assert ex.measure(slot, base, metric(f"{PY} score.py"), ENV, 0, str).ok  # the base ships
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def candidate(project: Path) -> str:
    """A commit that modifies, adds, deletes, chmods and symlinks, and changes a binary."""
    git(project, "checkout", "-q", "-b", "candidate")
    (project / "value.py").write_text("X = 3\n")
    (project / "new.txt").write_text("new\n")
    (project / "old.txt").unlink()
    (project / "blob.bin").write_bytes(bytes(range(256)) * 7 + bytes([255]) * 256)
    (project / "run.sh").chmod(0o755)
    (project / "link").symlink_to("value.py")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "candidate")
    commit = git(project, "rev-parse", "HEAD")
    git(project, "checkout", "-q", "main")
    return commit


def test_measures_on_a_worker(executor: RayExecutor, project: Path, slot: Slot) -> None:
    base = git(project, "rev-parse", "HEAD")
    env = {**ENV, "CUDA_VISIBLE_DEVICES": "7,8"}  # the driver's GPUs mean nothing on a worker
    redact = lambda text: text.replace("hunter2", "***")  # noqa: E731
    m = executor.measure(slot, base, metric(f"{PY} score.py"), env, 7, redact)
    assert (m.status, m.value, m.metrics["seed"], m.tampered) == ("ok", 9.0, 7.0, ())
    assert "***" in m.output and "hunter2" not in m.output
    assert m.metrics["driver_gpus"] == 0.0


def test_the_patch_travels(
    executor: RayExecutor, project: Path, slot: Slot, candidate: str
) -> None:
    assert executor.base is not None and str(executor.base[0]) != git(
        project, "rev-parse", f"{candidate}^{{tree}}"
    )
    for tree in (candidate, git(project, "rev-parse", f"{candidate}^{{tree}}")):
        m = executor.measure(
            slot, tree, MetricSpec(command=f"{PY} check.py", name="x"), ENV, 0, str
        )
        assert m.ok, m.why
        expected = {
            "x": 3,
            "new": 1,
            "old": 0,
            "exec": 1,
            "link": 1,
            "base_link": 1,
            "blob": 255 * 128 * 7 + 255 * 256,
        }
        assert {k: m.metrics[k] for k in expected} == expected
    assert (slot.path / "old.txt").exists()  # the driver's slot is left as it was


def test_the_budget_is_enforced_on_the_worker(
    executor: RayExecutor, project: Path, slot: Slot
) -> None:
    command = f"{PY} -c 'import time; time.sleep(60)'"
    m = executor.measure(
        slot, git(project, "rev-parse", "HEAD"), metric(command, "1s"), ENV, 0, str
    )
    assert m.status == "timeout" and "1s budget" in m.why
    assert m.duration < 10


def test_a_crash_and_a_missing_metric(executor: RayExecutor, project: Path, slot: Slot) -> None:
    head = git(project, "rev-parse", "HEAD")
    m = executor.measure(slot, head, metric("echo boom; exit 3"), ENV, 0, str)
    assert m.status == "crash" and "code 3: boom" in m.why
    assert executor.measure(slot, head, metric("echo nothing"), ENV, 0, str).status == "no-metric"


def test_tampering_is_seen_on_the_worker(executor: RayExecutor, project: Path, slot: Slot) -> None:
    command = "echo forged > data/ref.txt; echo score: 0"
    m = executor.measure(slot, git(project, "rev-parse", "HEAD"), metric(command), ENV, 0, str)
    assert m.tampered == ("data/ref.txt changed",)
    assert (slot.path / "data/ref.txt").read_text() == "reference\n"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _measure_killing(
    executor: RayExecutor, slot: Slot, head: str, marker: Path, kills: int
) -> tuple[Any, list[list[int]]]:
    """Measure `attempt.py`, SIGKILLing the Ray worker of each of the first `kills` attempts."""
    stop = threading.Event()

    def killer() -> None:
        killed = 0
        while killed < kills and not stop.is_set():
            lines = marker.read_text().splitlines() if marker.exists() else []
            if len(lines) > killed:
                os.kill(int(lines[killed].split()[0]), signal.SIGKILL)
                killed += 1
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        command = f"{PY} attempt.py {marker} {kills}"
        m = executor.measure(slot, head, metric(command), ENV, 0, str)
    finally:
        stop.set()
        thread.join()
    return m, [[int(p) for p in line.split()] for line in marker.read_text().splitlines()]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks processes through /proc")
def test_a_lost_worker_is_retried_once(
    executor: RayExecutor, project: Path, slot: Slot, tmp_path: Path
) -> None:
    head = git(project, "rev-parse", "HEAD")
    m, attempts = _measure_killing(executor, slot, head, tmp_path / "once", kills=1)
    assert (m.status, m.value, len(attempts)) == ("ok", 1.0, 2)
    m, attempts = _measure_killing(executor, slot, head, tmp_path / "twice", kills=2)
    assert len(attempts) == 2 and m.status == "crash"
    assert "the Ray worker running the measurement was lost" in m.why
    # the killed workers' commands did not run on
    wait_until(lambda: not any(_alive(command) for _, command in attempts),
               "the killed workers' commands to end", timeout=10)  # fmt: skip


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks processes through /proc")
def test_interrupt_cancels_what_is_in_flight(
    executor: RayExecutor, project: Path, slot: Slot, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"

    def interrupt_once_started() -> None:
        wait_for(marker)
        executor.interrupt()

    thread = threading.Thread(target=interrupt_once_started)
    thread.start()
    command = f"{PY} attempt.py {marker} 1"
    m = executor.measure(slot, git(project, "rev-parse", "HEAD"), metric(command), ENV, 0, str)
    thread.join()
    assert m.status == "crash" and "interrupted" in m.why
    command_pid = int(marker.read_text().split()[1])
    assert len(marker.read_text().splitlines()) == 1  # a cancelled task is not retried
    wait_until(lambda: not _alive(command_pid), "the cancelled command to end", timeout=10)
    assert not executor.in_flight


def test_a_shared_path_and_the_fallback_to_shipping(
    cluster: None, project: Path, slot: Slot, candidate: str, tmp_path: Path
) -> None:
    check = MetricSpec(command=f"{PY} check.py", name="x")
    shared = RayExecutor(make_spec(shared_path=str(project)), project, sandbox=None)  # type: ignore[arg-type]
    m = shared.measure(slot, candidate, check, ENV, 0, str)
    assert (m.value, shared.ship, shared.base) == (3.0, False, None)  # nothing shipped
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(project), str(clone)], check=True)
    git(project, "checkout", "-q", "candidate")
    (project / "value.py").write_text("X = 4\n")
    git(project, "commit", "-q", "-am", "newer")
    newer = git(project, "rev-parse", "HEAD")
    git(project, "checkout", "-q", "main")
    behind = RayExecutor(make_spec(shared_path=str(clone)), project, sandbox=None)  # type: ignore[arg-type]
    m = behind.measure(slot, newer, check, ENV, 0, str)
    assert (m.value, behind.ship) == (4.0, True)  # the clone cannot see it: shipped instead


def test_a_request_no_node_can_meet_is_a_spec_error(cluster: None, project: Path) -> None:
    with pytest.raises(SpecError, match="more than any Ray node has"):
        RayExecutor(make_spec(resources={"a100": 1}), project, sandbox=None)  # type: ignore[arg-type]


def test_without_ray_the_error_says_how_to_install_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SpecError, match=r"pip install 'ratchet-loop\[ray\]'"):
        RayExecutor(make_spec(), project, sandbox=None)  # type: ignore[arg-type]
