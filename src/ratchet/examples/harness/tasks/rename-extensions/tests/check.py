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


renamed = json.loads(
    '{"beach.jpeg": "beach.jpg", "cat.JPEG": "cat.jpg", "dog.jpg": "dog.jpg", "notes.txt": "notes.txt", "sunset.jpeg": "sunset.jpg", "archive.jpeg.bak": "archive.jpeg.bak", "mountain.Jpeg": "mountain.jpg", "scan.png": "scan.png"}'
)
folder = Path("photos")
if not folder.is_dir():
    fail("photos/ is gone")
got = sorted(p.name for p in folder.iterdir())
if got != sorted(renamed.values()):
    fail(f"photos/ holds {got}, expected {sorted(renamed.values())}")
for old, new in renamed.items():
    if (folder / new).read_text() != f"contents of {old}\n":
        fail(f"photos/{new} does not hold what {old} held")
print("passed")
