"""`ratchet --help`, as click renders it at 80 columns: printed without importing click
(see cli/__init__.py). tests/test_cli_startup.py renders click's and holds the two equal;
when a command or its one-line help changes, paste what that test prints here."""

HELP = """\
Usage: ratchet [OPTIONS] COMMAND [ARGS]...

  Run the autoresearch loop: propose a change, measure it, keep it only if it
  improves.

Options:
  --help  Show this message and exit.

Commands:
  init       Write a commented ratchet.toml and add .ratchet/ to .gitignore.
  run        Run the loop on this project, or continue the run of that name.
  doctor     Which sandbox layers work on this machine, and why not;...
  noise      Measure the incumbent again and again: how noisy is the metric?
  demo       Copy the bundled training example into DIRECTORY and improve...
  status     Summarize a run: baseline, incumbent, counts by decision.
  log        List a run's experiments with their decisions and whys.
  show       Show one experiment: its patch, rationale, why and output tail.
  finalize   Build ratchet/<run>-final from the base with the keeps...
  report     Write progress.png and report.md for a run, from the journal...
  dashboard  Serve a live web dashboard over the journal: runs,...
  review     List a run's keeps for a human decision; approve or reject them.\
"""
