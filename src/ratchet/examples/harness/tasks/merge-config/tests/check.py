"""Checks the workspace (the working directory); exit status 0 means passed."""

import json
import sys
from pathlib import Path


def fail(why: str) -> None:
    print(f"FAILED: {why}")
    sys.exit(1)


def read(name: str) -> str:
    path = Path(name)
    if not path.is_file():
        fail(f"{name} does not exist")
    return path.read_text(errors="replace")


expected = json.loads(
    '{"name": "shop", "debug": true, "server": {"host": "0.0.0.0", "port": 9000, "tls": {"enabled": true, "cert": "/etc/cert.pem"}}, "features": ["search"], "limits": {"rps": 100, "burst": 50, "queue": 10}}'
)
try:
    got = json.loads(read("merged.json"))
except json.JSONDecodeError as exc:
    fail(f"merged.json is not JSON: {exc}")
if got != expected:
    fail(f"merged.json is not the merge; got {json.dumps(got)[:400]}")
print("passed")
