"""Checks the workspace (the working directory); exit status 0 means passed."""

import importlib.util
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


spec = importlib.util.spec_from_file_location("stats_under_test", "stats.py")
if spec is None or not Path("stats.py").is_file():
    fail("stats.py does not exist")
module = importlib.util.module_from_spec(spec)
try:
    spec.loader.exec_module(module)
except Exception as exc:
    fail(f"stats.py does not import: {exc!r}")
cases = [
    ([3, 1, 2], 2),
    ([4, 1, 3, 2], 2.5),
    ([7], 7),
    ([5, 5, 1, 9], 5.0),
    ([-1.5, 2.5], 0.5),
    ([10, 2, 38, 23, 38, 23], 23),
]
for values, expected in cases:
    given = list(values)
    try:
        got = module.median(given)
    except Exception as exc:
        fail(f"median({values}) raised {exc!r}")
    if got != expected:
        fail(f"median({values}) returned {got!r}, expected {expected!r}")
    if given != values:
        fail(f"median({values}) changed its argument to {given}")
try:
    module.median([])
except ValueError:
    pass
except Exception as exc:
    fail(f"median([]) raised {exc!r}, not ValueError")
else:
    fail("median([]) did not raise ValueError")
print("passed")
