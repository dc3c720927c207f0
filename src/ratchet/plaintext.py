"""Untrusted text made safe to show and to store: rationales, output tails, whys that
quote them, file names. All of it comes from proposers and candidates, so it is data.

A terminal obeys control sequences: ESC starts clipboard writes (OSC 52), hyperlinks
(OSC 8), screen clears; a carriage return or backspace overwrites what was printed;
bidi overrides and invisible characters make text read differently than it is. Each
such character is replaced with a visible escape (`\\x1b`, `\\u202e`), so a reader sees
that it was there and nothing acts on it. Escaping is for showing: the journal keeps
the raw text, and `--json` prints it exactly (JSON escapes control characters itself).
"""

from __future__ import annotations

# controls (C0, DEL, C1), formats (bidi controls, zero-width characters, the BOM,
# tag characters), lone surrogates (they cannot even be encoded), line and paragraph
# separators (line breaks to some readers, not to others)
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape_line(line: str, keep_tabs: bool) -> str:
    if line.isprintable():  # the common case, checked at C speed
        return line
    import unicodedata  # only here: most commands print nothing that needs it

    return "".join(
        char
        if char.isprintable()
        or (keep_tabs and char == "\t")
        or unicodedata.category(char) not in _ESCAPED_CATEGORIES
        else _escape(char)
        for char in line
    )


def visible(text: str) -> str:
    """`text` for a multi-line view: newlines and tabs stay, every other control or
    invisible format character becomes a visible escape (`\\r\\n` counts as a newline)."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(_escape_line(line, keep_tabs=True) for line in lines)


def one_line(text: str) -> str:
    """`text` as one line (a table cell, a line of a log): newlines and tabs are escaped
    too, so the line count and the columns of what it is written into stay exact."""
    return _escape_line(text, keep_tabs=False)


def plural(count: int, word: str) -> str:
    """`1 keep`, `2 keeps`: a count in words, for every view."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
