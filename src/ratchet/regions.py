"""Region scopes: `editable = ["initial_program.py#EVOLVE-BLOCK"]` lets a proposal change
that file only between its region's marker lines.

A region is a pair of marker lines named in `[scope] markers` (OpenEvolve's
`EVOLVE-BLOCK` is built in). A marker line is one whose text, stripped of indentation,
starts with the marker. A file may hold several regions of the same name. A change is in
scope when every line outside the regions, and every marker line itself, is unchanged:
the file is cut into the parts between markers, and the parts outside must be equal,
part for part. What differs is named by line in the `why`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# OpenEvolve's markers: known without being declared
BUILTIN_MARKERS: dict[str, tuple[str, str]] = {
    "EVOLVE-BLOCK": ("# EVOLVE-BLOCK-START", "# EVOLVE-BLOCK-END"),
}
REGION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ENTRY = re.compile(r"(.+)#([A-Za-z][A-Za-z0-9_-]*)")


def split_entry(entry: str) -> tuple[str, str | None]:
    """`"a.py#EVOLVE-BLOCK"` -> `("a.py", "EVOLVE-BLOCK")`; a plain glob -> `(glob, None)`."""
    match = _ENTRY.fullmatch(entry)
    if match is None:
        return entry, None
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class Region:
    """The lines of one file a proposal may change: 1-based, inclusive, markers excluded."""

    name: str
    start_marker: int  # the line of the start marker
    end_marker: int

    @property
    def shown(self) -> str:
        first, last = self.start_marker + 1, self.end_marker - 1
        if last < first:
            return f"{self.name} (empty, after line {self.start_marker})"
        return f"{self.name} (lines {first}-{last})"


class RegionError(ValueError):
    """The file's markers do not make well-formed regions; the message says where."""


def _is_marker(line: str, marker: str) -> bool:
    return line.strip().startswith(marker)


def find_regions(text: str, name: str, markers: tuple[str, str]) -> list[Region]:
    """The regions of that name in `text`, in order; a start without its end (or an end
    without a start, or nested starts) is a `RegionError` naming the line."""
    start, end = markers
    regions: list[Region] = []
    opened: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if _is_marker(line, start):
            if opened is not None:
                raise RegionError(f"line {number}: a second {start!r} before {end!r}")
            opened = number
        elif _is_marker(line, end):
            if opened is None:
                raise RegionError(f"line {number}: {end!r} without {start!r} before it")
            regions.append(Region(name, opened, number))
            opened = None
    if opened is not None:
        raise RegionError(f"line {opened}: {start!r} is never closed by {end!r}")
    return regions


def _outside_parts(lines: list[str], regions: list[Region]) -> list[tuple[int, list[str]]]:
    """The lines outside the regions' insides (markers included), as (first line number,
    lines) parts: one before the first region, one after each."""
    parts: list[tuple[int, list[str]]] = []
    begin = 1
    for region in regions:
        parts.append((begin, lines[begin - 1 : region.start_marker]))
        begin = region.end_marker
    parts.append((begin, lines[begin - 1 :]))
    return parts


def _span(numbers: list[int]) -> str:
    spans: list[str] = []
    for number in sorted(set(numbers)):
        if spans and spans[-1].split("-")[-1] == str(number - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{number}"
        else:
            spans.append(str(number))
    return ", ".join(spans)


def _changed_lines(old: list[str], new: list[str], first: int) -> list[int]:
    """The old part's line numbers a change touches (common head and tail trimmed)."""
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    touched = list(range(first + head, first + len(old) - tail))
    return touched or [first + head]  # an insertion: the line it goes before


def region_violation(
    path: str, old: str | None, new: str | None, name: str, markers: tuple[str, str]
) -> str | None:
    """Why changing `path` from `old` to `new` leaves its `name` regions, or None.

    `None` for `old` is a new file, for `new` a deleted one: both change the lines
    outside any region."""
    if old is None:
        return f"{path} is new, but only its {name} regions may change"
    try:
        regions = find_regions(old, name, markers)
    except RegionError as error:
        return f"{path} has no well-formed {name} region in the incumbent ({error})"
    if not regions:
        return f"{path} has no {name} region ({markers[0]!r} .. {markers[1]!r}) to change"
    where = ", ".join(r.shown for r in regions)
    if new is None:
        return f"the proposal deletes {path}; only its {where} may change"
    try:
        after = find_regions(new, name, markers)
    except RegionError as error:
        return f"the proposal breaks {path}'s {name} markers ({error}); only {where} may change"
    if len(after) != len(regions):
        return (
            f"the proposal changes {path}'s {name} markers ({len(regions)} regions before, "
            f"{len(after)} after); only {where} may change"
        )
    old_lines, new_lines = old.splitlines(), new.splitlines()
    touched: list[int] = []
    for (first, before), (_, now) in zip(
        _outside_parts(old_lines, regions), _outside_parts(new_lines, after), strict=True
    ):
        if before != now:
            touched += _changed_lines(before, now, first)
    if not touched:
        return None
    return (
        f"the proposal changed {path} at {'line' if len(set(touched)) == 1 else 'lines'} "
        f"{_span(touched)}, outside its {where}; the marker lines and everything outside "
        "them may not change"
    )
