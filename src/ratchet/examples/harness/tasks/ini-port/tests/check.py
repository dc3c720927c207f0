"""Checks the workspace (the working directory); exit status 0 means passed."""

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


expected = "; settings for the shop service\n[server]\nhost = 0.0.0.0\nport = 8080\nworkers = 4\n\n[database]\nhost = db.internal\nport = 5432\n; the port above is the database's, not the server's\n\n[metrics]\nenabled = true\nport = 9100\n"
got = read("settings.ini")
if got != expected:
    import difflib

    diff = "\n".join(
        difflib.unified_diff(
            expected.splitlines(), got.splitlines(), "expected", "settings.ini", lineterm=""
        )
    )
    fail(f"settings.ini is not as expected:\n{diff}")
print("passed")
