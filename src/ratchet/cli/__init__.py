"""The command line: turns arguments into calls. Exit 0 on success, 2 on a usage or spec
error (one line, never a traceback), 1 when a run could not go on.

Built on click (see cli/common.py for why not typer or argparse). `--help` lists the
commands in the order they are added: the loop first, then reading the journal,
governance and the views, and `review` (a group of its own) last.
"""

import sys

# isort: off
from ratchet.cli import running  # noqa: F401  (registers init, run, doctor, noise, demo)
from ratchet.cli import reading  # noqa: F401  (registers status, log, show)
from ratchet.cli import governing  # (registers finalize; review is added below)
from ratchet.cli import viewing  # noqa: F401  (registers report, dashboard)

# isort: on
from ratchet.cli.common import app, run_command_line

app.add_command(governing.review)


def main() -> None:
    sys.exit(run_command_line())
