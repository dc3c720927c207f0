"""The Ray executor: each measurement is a Ray task, on whichever node has the resources.

What travels: the first tree measured (the run's base) once, as a tar archive of its
tracked files put in Ray's object store; then, per measurement, the binary patch from that
base to the tree to measure. A worker extracts each base once into a cache under its temp
folder, copies it for every measurement, applies the patch and runs the metric command
through the process layer, so that the budget is enforced there, on the worker. Protected
files are digested before and after on the worker; a change comes back in `tampered`.
Before the evaluate step the tree is brought back to the candidate's (ratchet.restore)
from clean copies: the files the patch wrote, kept aside, then the node's cached base.
With `shared_path`, the worker checks the tree out of the repository at that path instead,
and shipping takes over if the tree is not there.

A task whose worker (or node) is lost is retried once by Ray; lost twice, it is a `crash`
whose why says so. When a node leaves the cluster while a task waits, the retry has one
attempt's budgets plus `LOST_NODE_GRACE` to finish (Ray alone would let it wait for a
node as long as the scheduling allowance, ten minutes and more); then it is a `crash`
naming the node. The journal stays with the driver: tasks only return a `Measurement`.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pygit2
from pygit2.enums import DiffOption

from ratchet.errors import RunError, machine_failure
from ratchet.executors import Redact
from ratchet.integrity import compare_digests, digest_protected
from ratchet.measure import Measurement, measure_candidate
from ratchet.restore import FolderPristine, GitPristine, Pristine
from ratchet.sandbox import ProcessSandbox, Sandbox, pidfile_for
from ratchet.spec import SpecError
from ratchet.specmodel import MetricSpec, Spec
from ratchet.workspace import Slot

SCHEDULING_ALLOWANCE = 600.0  # seconds a task may wait for a node, on top of its budgets
NODE_POLL = 1.0  # seconds between looks at the cluster's nodes while a task runs
LOST_NODE_GRACE = 30.0  # seconds a retry may take past its budgets, once a node was lost
MISSING = "missing"  # a worker's answer when the shared repository lacks the tree
_TREE, _LINK, _EXECUTABLE = 0o040000, 0o120000, 0o100755
_BLOBS = {0o100644, 0o100664, _EXECUTABLE}
# killed with its Ray worker, the measurement's process group would run on: this watchdog
# sees the worker's end of the pipe close and kills the group. It runs in a session of its
# own and is orphaned at once, since Ray kills a cancelled worker's children, not the group
_WATCHDOG = (
    'exec 3<&0; (read -r _ <&3; pg=$(cat "$1" 2>/dev/null) && kill -s KILL -- "-$pg" '
    '2>/dev/null; rm -rf "$2") &'
)


@dataclass(frozen=True)
class Job:
    """One measurement, as a worker receives it."""

    tree: str
    metric: MetricSpec
    env: dict[str, str]
    seed: int
    protected: list[str]
    memory: int | None
    shared_path: str | None = None  # check `tree` out of this repository
    base_id: str = ""  # else: the shipped base tree's id, and the patch from it to `tree`
    patch: bytes = b""


def archive(repo: pygit2.Repository, tree: pygit2.Tree) -> bytes:
    """A tar of the tree's tracked files, modes and symlinks; submodules are left out."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        pending = [(tree, "")]
        while pending:
            folder, prefix = pending.pop()
            for entry in folder:
                path, mode = prefix + str(entry.name), entry.filemode
                if mode == _TREE:
                    pending.append((repo[entry.id].peel(pygit2.Tree), path + "/"))
                    continue
                if mode != _LINK and mode not in _BLOBS:
                    continue  # a submodule: its commit is in another repository
                data = repo[entry.id].peel(pygit2.Blob).data
                info = tarfile.TarInfo(path)
                if mode == _LINK:
                    info.type, info.linkname = tarfile.SYMTYPE, os.fsdecode(data)
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o755 if mode == _EXECUTABLE else 0o644
                    tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git on the worker; the error is git's last line of stderr."""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True,
                          env={**os.environ, "LC_ALL": "C", **(env or {})})  # fmt: skip
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["failed"]
        raise RuntimeError(f"git {args[0]}: {lines[-1]}")
    return proc.stdout.decode(errors="replace")


def _base_dir(root: Path, base_id: str, base: list[Any]) -> Path:
    """This node's copy of the shipped base tree, extracted by the first task that needs it."""
    cache = root / f"base-{base_id}"
    if not cache.is_dir():
        import ray

        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=root))
        try:
            extract(ray.get(base[0]), staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            staging.rename(cache)
        except OSError:  # another task on this node got there first
            shutil.rmtree(staging, ignore_errors=True)
    return cache


def extract(data: bytes, dest: Path) -> None:
    """Unpack a base archive into `dest`, creating no link that leads out of it.

    The "data" filter refuses absolute links and links (and paths) outside `dest`: a
    tree holding one cannot be measured on a worker, and the why says which link.
    """
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as error:
            raise RuntimeError(f"the tree cannot be unpacked on the worker: {error}") from None


def _checkout_shared(shared: Path, tree: str, dest: Path) -> bool:
    """`tree` from the repository at `shared`, with a private index; False if it lacks it."""
    try:
        _git(shared, "cat-file", "-e", f"{tree}^{{tree}}")
    except RuntimeError:
        return False
    env = {"GIT_INDEX_FILE": str(dest.parent / "index")}  # the shared index is never written
    _git(shared, f"--work-tree={dest}", "read-tree", tree, env=env)
    _git(shared, f"--work-tree={dest}", "checkout-index", "-a", "-f", env=env)
    return True


def _keep_patched(patch: bytes, candidate: Path, kept: Path) -> Path:
    """A clean copy of the files the patch wrote (few and small), to restore them from."""
    kept.mkdir()
    if not patch:
        return kept
    for delta in pygit2.Diff.parse_diff(patch).deltas:
        if delta.status_char() == "D":
            continue
        path = delta.new_file.path
        source, target = candidate / path, kept / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    return kept


def measure_on_worker(job: Job, base: list[Any]) -> Measurement | str:
    """The Ray task: the candidate in a fresh folder, measured there under its budget."""
    root = Path(tempfile.gettempdir()) / "ratchet-ray"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="m-", dir=root))
    candidate = work / "tree"
    candidate.mkdir(parents=True)
    watchdog = subprocess.Popen(["/bin/sh", "-c", _WATCHDOG, "sh", str(pidfile_for(candidate)),
                                 str(work)], stdin=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        pristine: Pristine
        if job.shared_path is not None:
            if not _checkout_shared(Path(job.shared_path), job.tree, candidate):
                return MISSING
            pristine = GitPristine(pygit2.Repository(job.shared_path), job.tree)
        else:
            candidate.rmdir()
            cache = _base_dir(root, job.base_id, base)
            shutil.copytree(cache, candidate, symlinks=True)
            if job.patch:
                (work / "patch").write_bytes(job.patch)
                # outside any repository: git must not look for one above the folder
                _git(candidate, "apply", "--binary", "--whitespace=nowarn", str(work / "patch"),
                     env={"GIT_CEILING_DIRECTORIES": str(work)})  # fmt: skip
            pristine = FolderPristine(
                [_keep_patched(job.patch, candidate, work / "patched"), cache]
            )
        env = {k: v for k, v in job.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        if "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPUs Ray gave this task, not the driver's
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        env["RATCHET_WORKER_PID"] = str(os.getpid())
        before = digest_protected(candidate, job.protected)
        sandbox = ProcessSandbox(memory=job.memory)
        m = measure_candidate(candidate, job.metric, sandbox, env, job.seed,
                              pristine=pristine, protected=job.protected)  # fmt: skip
        changed = compare_digests(before, digest_protected(candidate, job.protected))
        return replace(m, tampered=tuple(dict.fromkeys([*m.tampered, *changed])))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        assert watchdog.stdin is not None
        watchdog.stdin.close()
        watchdog.wait()


def ray_start_failure(address: str | None, error: BaseException) -> str:
    """One line for a Ray cluster that did not start, or could not be reached."""
    lines = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__
    if address is None:
        return (
            f"Ray did not start a local cluster ({reason}); check that `ray start --head` "
            "works on this machine, or set [executor] address to a running cluster"
        )
    return (
        f"Ray could not connect to the cluster at {address} ({reason}); check `ray status` "
        "there, or fix [executor] address"
    )


class RayExecutor:
    """Measurements as Ray tasks; the driver keeps the slots, the journal and every decision."""

    name = "ray"

    def __init__(self, spec: Spec, project: Path, sandbox: Sandbox) -> None:
        try:
            import ray
        except ImportError:
            raise SpecError(
                "[executor] kind = 'ray' needs Ray; run: pip install 'ratchet-loop[ray]'"
            ) from None
        self.spec, self.project, ex = spec, project, spec.executor
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        self.started = False
        if not ray.is_initialized():
            local: dict[str, Any] = {}
            if ex.address is None:  # a new local cluster with room for `parallel` measurements
                wanted = math.ceil(ex.parallel * ex.num_cpus)  # ("local": not RAY_ADDRESS's)
                local["num_cpus"] = max(os.cpu_count() or 1, wanted)
            try:
                ray.init(address=ex.address or "local", ignore_reinit_error=True,
                         include_dashboard=False, log_to_driver=False, configure_logging=False,
                         **local)  # fmt: skip
            except Exception as error:
                # whatever Ray raises here (its startup timeout is a bare Exception, an
                # unusable temporary folder an OSError) is the environment's, not ratchet's
                if machine_failure(error) is not None:
                    raise  # a full disk says so in its own words
                raise RunError(ray_start_failure(ex.address, error)) from None
            self.started = True
        self._check_fits(ray.nodes())  # type: ignore[no-untyped-call]
        self.task = ray.remote(measure_on_worker).options(
            num_cpus=ex.num_cpus, num_gpus=ex.num_gpus, resources=dict(ex.resources),
            max_retries=1, retry_exceptions=False,
        )  # fmt: skip
        gpus = ex.num_gpus > 0  # CUDA maps far more address space than it uses
        self.memory = None if gpus else spec.sandbox.memory
        self.ship = ex.shared_path is None
        self.base: tuple[pygit2.Oid, Any] | None = None  # the base tree and its archive's ref
        self.lock = threading.Lock()
        self.in_flight: set[Any] = set()  # the tasks measuring now, for `interrupt`

    def _check_fits(self, nodes: list[dict[str, Any]]) -> None:
        """A task asking for more than any node has would wait forever: say so now."""
        ex = self.spec.executor
        wanted = {"CPU": ex.num_cpus, "GPU": ex.num_gpus, **ex.resources}
        wanted = {k: v for k, v in wanted.items() if v > 0}
        for node in nodes:
            have = node.get("Resources", {})
            if node.get("Alive") and all(have.get(k, 0) >= v for k, v in wanted.items()):
                return
        asked = ", ".join(f"{k} = {v:g}" for k, v in wanted.items())
        raise SpecError(f"[executor] each measurement asks for {asked}, more than any Ray node has")

    def _shipment(self, slot: Slot, tree: str) -> tuple[str, bytes, list[Any]]:
        """The base tree's id, the patch from it to `tree`, and the base archive's ref."""
        import ray

        target = slot.repo[pygit2.Oid(hex=tree)].peel(pygit2.Tree)
        with self.lock:
            if self.base is None:
                self.base = (target.id, ray.put(archive(slot.repo, target)))
            base_id, ref = self.base
        if target.id == base_id:
            return str(base_id), b"", [ref]
        base_tree = slot.repo[base_id].peel(pygit2.Tree)
        flags = DiffOption.SHOW_BINARY | DiffOption.IGNORE_SUBMODULES
        diff = base_tree.diff_to_tree(target, flags=flags)
        return str(base_id), b"".join(p.data for p in diff if p is not None), [ref]

    def _job(self, slot: Slot, tree: str, metric: MetricSpec, env: Mapping[str, str],
             seed: int) -> tuple[Job, list[Any]]:  # fmt: skip
        job = Job(tree, metric, dict(env), seed, self.spec.scope.protected, self.memory)
        if not self.ship:
            return replace(job, shared_path=self.spec.executor.shared_path), []
        base_id, patch, refs = self._shipment(slot, tree)
        return replace(job, base_id=base_id, patch=patch), refs

    def measure(self, slot: Slot, tree: str, metric: MetricSpec, env: Mapping[str, str],
                seed: int, redact: Redact) -> Measurement:  # fmt: skip
        started_at, start = time.time(), time.monotonic()
        result = self._run(*self._job(slot, tree, metric, env, seed), seed, start, started_at)
        if result == MISSING:  # the shared repository cannot see this tree: ship from now on
            self.ship = True
            result = self._run(*self._job(slot, tree, metric, env, seed), seed, start, started_at)
        assert isinstance(result, Measurement)
        return replace(result, output=redact(result.output), why=redact(result.why))

    def _run(self, job: Job, refs: list[Any], seed: int, start: float,
             started_at: float) -> Measurement | str:  # fmt: skip
        import ray
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError

        metric = job.metric
        budgets = metric.budget + (metric.evaluate_budget or metric.budget) * bool(metric.evaluate)
        limit = SCHEDULING_ALLOWANCE + 2 * (budgets + 2 * metric.grace + 60)  # two attempts

        def crash(why: str) -> Measurement:
            return Measurement("crash", None, {}, time.monotonic() - start, "", why, seed,
                               started_at)  # fmt: skip

        alive = _alive_nodes()
        ref = self.task.remote(job, refs)
        with self.lock:
            self.in_flight.add(ref)
        try:
            deadline, lost = time.monotonic() + limit, ""
            while not ray.wait([ref], timeout=NODE_POLL)[0]:
                now = time.monotonic()
                if not lost and (gone := alive.keys() - _alive_nodes().keys()):
                    # Ray retries a task lost with its node; the retry gets one attempt's
                    # time from now, not the scheduling allowance of a fresh task
                    lost = ", ".join(alive[node] for node in sorted(gone))
                    deadline = min(deadline, now + budgets + 2 * metric.grace + LOST_NODE_GRACE)
                if now >= deadline:
                    ray.cancel(ref, force=True)
                    if lost:
                        return crash(f"the Ray node {lost} was lost during the measurement, "
                                     "and its retry did not finish within "
                                     f"{budgets + 2 * metric.grace + LOST_NODE_GRACE:.0f}s "
                                     "after that")  # fmt: skip
                    return crash(f"the Ray task did not finish within {limit:.0f}s; no node "
                                 f"may have been free to run it")  # fmt: skip
            result: Measurement | str = ray.get(ref)
            return result
        except TaskCancelledError:
            return crash("the measurement was interrupted: its Ray task was cancelled")
        except RayTaskError as error:
            cause = error.cause if isinstance(error.cause, BaseException) else error
            return crash(f"the measurement failed on the Ray worker: {_first_line(cause)}")
        except RayError as error:
            name, line = type(error).__name__, _first_line(error).partition(": ")[2]
            return crash(f"the Ray worker running the measurement was lost ({name}), and its "
                         f"retry too: {line}")  # fmt: skip
        except BaseException:
            ray.cancel(ref, force=True)  # interrupted: the task must not run on unseen
            raise
        finally:
            with self.lock:
                self.in_flight.discard(ref)

    def interrupt(self) -> None:
        """Cancel every measurement in flight (killing its worker, and so its command)."""
        import ray

        with self.lock:
            refs = list(self.in_flight)
        for ref in refs:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def _alive_nodes() -> dict[str, str]:
    """The cluster's live nodes: their ids, each with how a message names it."""
    import ray

    return {
        node["NodeID"]: f"{node['NodeID'][:8]} ({node.get('NodeManagerAddress', '?')})"
        for node in ray.nodes()  # type: ignore[no-untyped-call]
        if node.get("Alive")
    }


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200] if lines else 'no message'}"
