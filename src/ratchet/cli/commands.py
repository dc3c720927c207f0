"""Every command, added to the app. `--help` lists them in the order they are added:
the loop first, then reading the journal, governance and the views, and `review` (a
group of its own) last.
"""

# isort: off
from ratchet.cli import running  # noqa: F401  (registers init, run, doctor, noise, demo)
from ratchet.cli import reading  # noqa: F401  (registers status, log, show)
from ratchet.cli import governing  # (registers finalize; review is added below)
from ratchet.cli import viewing  # noqa: F401  (registers report, dashboard)

# isort: on
from ratchet.cli.common import app, run_command_line

app.add_command(governing.review)

__all__ = ["app", "run_command_line"]
