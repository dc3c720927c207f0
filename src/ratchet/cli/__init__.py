"""The command line: turns arguments into calls. Exit 0 on success, 2 on a usage or spec
error (one line, never a traceback), 1 when a run could not go on.

`--help` lists the commands in the order their modules are imported: the loop first,
then reading the journal, then governance.
"""

# isort: off
from ratchet.cli import running  # noqa: F401  (registers init, run, doctor, noise, demo)
from ratchet.cli import reading  # noqa: F401  (registers status, log, show)
from ratchet.cli import governing  # noqa: F401  (registers review, finalize)
from ratchet.cli import viewing  # noqa: F401  (registers report, dashboard)

# isort: on
from ratchet.cli.common import app


def main() -> None:
    app()
