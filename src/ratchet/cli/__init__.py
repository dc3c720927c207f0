"""The command line: turns arguments into calls. Exit 0 on success, 2 on a usage or spec
error (one line, never a traceback), 1 when a run could not go on.

Built on click (cli/common.py says why not typer or argparse), imported only once a
command runs: `ratchet --help` (and `ratchet` alone) print the top-level help kept in
cli/helptext.py, click's own rendering of it at 80 columns (a test holds the two equal),
so the most typed command answers without importing click at all.
"""

import sys


def main() -> None:
    args = sys.argv[1:]
    if args == ["--help"] or not args:
        from ratchet.cli.helptext import HELP

        print(HELP, file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)  # no arguments: the help, as click shows it, exit 2
    from ratchet.cli.commands import run_command_line

    sys.exit(run_command_line())
