"""What the reading commands print, and how: rich on a terminal (or where FORCE_COLOR asks
for colours), plain lines elsewhere.

Importing rich costs a command about a tenth of a second, as much as the rest of it at
100,000 experiments; a pipe or a file needs none of it. So a command describes what it
prints (lines of spans, a grid of labels and values, a table, a diff) and `output()` gives
it the printer for stdout: `RichOutput` draws it with rich's console, `PlainOutput`
writes the same words in the same columns, unwrapped and uncoloured, with no rich
imported at all.

Every span is untrusted text unless it is one of ratchet's own words: each is escaped
(`plaintext.visible`, or `one_line` for a cell that must stay on one line) by both
printers, never parsed as markup.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ratchet.plaintext import one_line, visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

UNWRAPPED = 1 << 20  # the width of a rich console that is not a terminal: no line wraps
TAB_SIZE = 8  # rich's: a tab inside a table cell becomes spaces to this stop


class Span(NamedTuple):  # a NamedTuple: dataclasses costs `--help` a few ms to import
    """Text and its rich style ("" for none); `single` escapes newlines and tabs too."""

    text: str
    style: str = ""
    single: bool = False

    def shown(self) -> str:
        return one_line(self.text) if self.single else visible(self.text)


Cell = str | Span  # a str: a Span of that text with no style


def span(cell: Cell) -> Span:
    return cell if isinstance(cell, Span) else Span(cell)


def rich_wanted() -> bool:
    """rich on a terminal; elsewhere only when FORCE_COLOR asks for colours."""
    return sys.stdout.isatty() or bool(os.environ.get("FORCE_COLOR"))


def make_console() -> Console:
    """rich's console for stdout. On a terminal, its width and colours; elsewhere (a pipe,
    a file) lines are not wrapped and not coloured, unless FORCE_COLOR asks for colours
    (NO_COLOR, as rich reads it, takes them away anywhere)."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    # not a terminal to rich either (so `run` prints plain lines, not a live view), with
    # colours only when asked for (https://force-color.org)
    colours = bool(os.environ.get("FORCE_COLOR"))
    return Console(width=UNWRAPPED, soft_wrap=True, force_terminal=False,
                   color_system="standard" if colours else None)  # fmt: skip


class Output(Protocol):
    def line(self, *parts: Cell) -> None:
        """One line (or several, where a span holds newlines) of spans side by side."""

    def grid(self, rows: Sequence[Sequence[Cell]]) -> None:
        """Rows of cells in columns two spaces apart, with no header."""

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        """A table with a bold header row and no borders."""

    def diff(self, text: str) -> None:
        """A patch (the candidate's files: escaped like any untrusted text), coloured
        where the console shows colours."""


# plain ---------------------------------------------------------------------------------
def cell_width(text: str) -> int:
    """Columns a line takes on a terminal: wide (East Asian) characters two, combining
    marks none; rich's own measure, without rich."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


class PlainOutput:
    """The same words in the same columns as `RichOutput`, as plain text: no wrapping,
    no colour, no trailing spaces."""

    def _print(self, text: str) -> None:
        sys.stdout.write(text + "\n")  # one write a call: PYTHONUNBUFFERED makes each a syscall

    def line(self, *parts: Cell) -> None:
        self._print("".join(span(p).shown() for p in parts))

    def _columns(self, rows: Sequence[Sequence[str]], edge: str, between: str) -> None:
        """`rows` of cells (each may hold lines) laid out as rich lays out a table."""
        split = [[cell.expandtabs(TAB_SIZE).split("\n") for cell in row] for row in rows]
        count = max((len(row) for row in split), default=0)
        widths = [
            max((cell_width(line) for row in split if i < len(row) for line in row[i]), default=0)
            for i in range(count)
        ]
        lines = []
        for row in split:
            for n in range(max((len(cell) for cell in row), default=1)):
                pieces = []
                for i, cell in enumerate(row):
                    text = cell[n] if n < len(cell) else ""
                    pieces.append(text + " " * (widths[i] - cell_width(text)))
                lines.append((edge + between.join(pieces)).rstrip())
        if lines:
            self._print("\n".join(lines))

    def grid(self, rows: Sequence[Sequence[Cell]]) -> None:
        self._columns([[span(c).shown() for c in row] for row in rows], "", "  ")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        shown = [[span(c).shown() for c in row] for row in rows]
        self._columns([list(headers), *shown], " ", "  ")

    def diff(self, text: str) -> None:
        self._print(visible(text))


# rich ----------------------------------------------------------------------------------
class RichOutput:
    """rich's console: styles, a terminal's width, a diff coloured by pygments."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @staticmethod
    def _text(cell: Cell) -> Text:
        from rich.text import Text

        part = span(cell)
        return Text(part.shown(), style=part.style)

    def line(self, *parts: Cell) -> None:
        from rich.text import Text

        self.console.print(Text.assemble(*(self._text(p) for p in parts)))

    def grid(self, rows: Sequence[Sequence[Cell]]) -> None:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        for row in rows:
            table.add_row(*(self._text(c) for c in row))
        self.console.print(table)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        from rich.table import Table

        table = Table(header_style="bold", box=None)
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*(self._text(c) for c in row))
        self.console.print(table)

    def diff(self, text: str) -> None:
        text = visible(text)
        # pygments costs a tenth of a second: only where the console shows colours
        if self.console.color_system is None:
            from rich.text import Text

            self.console.print(Text(text))
            return
        from rich.syntax import Syntax

        self.console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))


_made: list[Output] = []


def output() -> Output:
    """The printer for stdout, made once: rich's where `rich_wanted()`, else plain."""
    if not _made:
        if rich_wanted():
            from ratchet.cli.common import console

            _made.append(RichOutput(console))
        else:
            _made.append(PlainOutput())
    return _made[0]
