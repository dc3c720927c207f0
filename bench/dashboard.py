"""The dashboard's API on a long history: a journal of 100,000 experiments, every
endpoint timed over real HTTP against `ratchet dashboard` (uvicorn).

The journal is built as `big_journal.py` builds it (a real project, a real run's
baseline, then N experiments written into the journal). The dashboard is started as a
user starts it; the first request that reads a run's counts folds them once (the
dashboard does that at start, in the background): it is timed apart, as `first`. Then
each endpoint is asked `--repeats` times over one keep-alive connection: median and
worst, in milliseconds.

    python bench/dashboard.py [--experiments 100000] [--repeats 20] [--dir PATH]
                              [--json PATH]

With `--dir`, the project is kept there (and reused when it already holds a journal).
"""

from __future__ import annotations

import http.client
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from big_journal import GIT_ENV, bench_main

LIMIT_MS = 200.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "ratchet", "dashboard", "--port", str(port)],
                             cwd=root, env={**os.environ, **GIT_ENV},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return child, port
        except OSError:
            time.sleep(0.05)
    child.kill()
    raise SystemExit("the dashboard did not start")


def ask(connection: http.client.HTTPConnection, path: str) -> tuple[float, int, int]:
    start = time.perf_counter()
    connection.request("GET", path, headers={"Host": "127.0.0.1"})
    response = connection.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - start) * 1000
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed, response.status, len(body)


def endpoints(root: Path) -> list[str]:
    db = sqlite3.connect(root / ".ratchet" / "journal.db")
    last, middle = db.execute("SELECT MAX(id), MAX(id) / 2 FROM experiments").fetchone()
    keep = db.execute("SELECT MAX(id) FROM experiments WHERE decision = 'keep'").fetchone()[0]
    db.close()
    return [
        "/api/runs",
        "/api/runs/default",
        "/api/runs/default/points?after=0&limit=2000",
        f"/api/runs/default/points?after={last - 2000}&limit=2000",
        "/api/runs/default/experiments?limit=50",
        f"/api/runs/default/experiments?limit=50&before={middle}",
        f"/api/runs/default/experiments?limit=50&offset={last - 100}",
        "/api/runs/default/experiments?limit=50&category=failed%20to%20measure",
        "/api/runs/default/experiments?limit=50&decision=crash&offset=5000",
        "/api/runs/default/keeps",
        f"/api/experiments/{middle}",
        f"/api/experiments/{keep}",
        "/runs/default",
        "/runs/default/experiments?page=1000",
        f"/experiments/{middle}",
        "/compare",
    ]


def measure(root: Path, repeats: int) -> dict[str, object]:
    child, port = start(root)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        first, _, _ = ask(connection, "/api/runs/default")
        table: dict[str, dict[str, float]] = {}
        for path in endpoints(root):
            times, size = [], 0
            for _ in range(repeats):
                elapsed, _, size = ask(connection, path)
                times.append(elapsed)
            table[path] = {"median_ms": round(statistics.median(times), 1),
                           "worst_ms": round(max(times), 1), "bytes": size}  # fmt: skip
        connection.close()
    finally:
        child.terminate()
        child.wait(timeout=30)
    worst = max(v["worst_ms"] for v in table.values())
    return {
        "experiments": sqlite3.connect(root / ".ratchet" / "journal.db")
        .execute("SELECT COUNT(*) FROM experiments")
        .fetchone()[0],
        "load_average": os.getloadavg()[0],
        "first_summary_ms": round(first, 1),
        "endpoints": table,
        "worst_ms": worst,
        "every_median_under_200_ms": all(v["median_ms"] < LIMIT_MS for v in table.values()),
    }


def main() -> None:
    bench_main(__doc__, 20, measure)


if __name__ == "__main__":
    main()
