"""A patch as lines a page colours: each with its kind (file header, hunk, added,
removed, context). The text stays text: the template escapes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiffLine:
    kind: str  # file | hunk | add | remove | context | meta
    text: str


def diff_lines(patch: str, limit: int = 5000) -> list[DiffLine]:
    lines = []
    for line in patch.splitlines()[:limit]:
        if line.startswith(("diff --git", "+++ ", "--- ")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "remove"
        elif line.startswith(" ") or not line:
            kind = "context"
        else:
            kind = "meta"
        lines.append(DiffLine(kind, line))
    return lines
