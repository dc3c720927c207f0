"""A Ray node lost while it measures: on a local two-node cluster, the worker node's
processes are killed mid-measurement; the experiment is a `crash` naming the node within
its budget plus a bounded grace, not left undecided for the scheduling allowance."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import wait_for

from conftest import git, make_project
from ratchet.spec import parse_spec
from ratchet.workspace import ensure_slot

ray = pytest.importorskip(
    "ray", reason="the Ray executor needs Ray: pip install 'ratchet-loop[ray]'"
)
cluster_utils = pytest.importorskip("ray.cluster_utils", reason="Ray's local cluster helper")

from ratchet.executors import ray as ray_executor  # noqa: E402  (only once Ray is there)

SLOW = """
import os, sys, time
open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
time.sleep(60)
print("score: 1")
"""


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """A head with no CPU for tasks and one worker node: the worker measures."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # see FIELD-NOTES: no token under HOME
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    try:
        cluster = cluster_utils.Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        worker = cluster.add_node(num_cpus=1)
    except Exception as error:
        pytest.skip(f"a second Ray node cannot start here: {type(error).__name__}: {error}")
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_lost_node_is_a_crash_within_the_budget_and_a_grace(
    two_nodes: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, worker = two_nodes
    monkeypatch.setattr(ray_executor, "LOST_NODE_GRACE", 5.0)
    project = make_project(tmp_path / "project", {"slow.py": SLOW})
    slot = ensure_slot(project, 0, git(project, "rev-parse", "HEAD"))
    budget, grace = 8.0, 0.5
    spec = parse_spec(
        {"scope": {"editable": ["slow.py"]},
         "metric": {"command": "x", "name": "score", "budget": f"{budget}s",
                    "grace": f"{grace}s"},
         "executor": {"kind": "ray", "address": cluster.address}},
        "t",
    )  # fmt: skip
    executor = ray_executor.RayExecutor(spec, project, sandbox=None)  # type: ignore[arg-type]
    marker = tmp_path / "started"
    metric = spec.metric.model_copy(update={"command": f"{sys.executable} slow.py {marker}"})
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    result: list[Any] = []

    thread = threading.Thread(
        target=lambda: result.append(
            executor.measure(slot, git(project, "rev-parse", "HEAD"), metric, env, 0, str)
        )
    )
    thread.start()
    wait_for(marker, timeout=60)  # the measurement runs on the worker node
    killed = time.monotonic()
    cluster.remove_node(worker, allow_graceful=False)  # its raylet and workers, killed
    thread.join(timeout=120)
    assert not thread.is_alive()
    waited = time.monotonic() - killed
    (measurement,) = result
    assert measurement.status == "crash"
    assert "was lost during the measurement" in measurement.why
    assert worker.node_id[:8] in measurement.why
    # the node's loss is seen within Ray's health checks (a few seconds by default; a
    # minute allowed for a loaded machine); then one attempt's time and the grace: not the
    # 150 s and more the issue saw, nor the scheduling allowance of ten minutes
    assert waited < budget + 2 * grace + ray_executor.LOST_NODE_GRACE + 60, waited
    assert waited >= budget + 2 * grace + 5.0  # the retry was given its time first
    executor.close()
