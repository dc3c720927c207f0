"""Commands that show a run to people: report (a plot and a Markdown report) and
dashboard (a web page over the journal). Both only read the journal."""

from __future__ import annotations

from pathlib import Path

import click

from ratchet.cli.common import _print_json, _project, _spec, app, console, guarded, json_flag
from ratchet.errors import UsageError


@app.command()
@click.option("--run", metavar="NAME", help="The run (default: the newest one).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder to write into (default: .ratchet/reports/RUN/).",
)
@json_flag
@guarded  # fmt: skip
def report(run: str | None, out: Path | None, as_json: bool) -> None:
    """Write progress.png and report.md for a run, from the journal (during a run too)."""
    from ratchet.report import write_report
    from ratchet.view import plain

    project = _project()
    written = write_report(project, _spec(project), run, out.resolve() if out else None)
    if as_json:
        _print_json({"run": written.run, "folder": str(written.folder),
                     "files": [str(f) for f in written.files]})  # fmt: skip
        return
    for path in written.files:
        console.print(plain(f"wrote {path}"))


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
@click.option(
    "--host",
    default="127.0.0.1",
    metavar="ADDRESS",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    default=8765,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--token",
    envvar="RATCHET_DASHBOARD_TOKEN",
    show_envvar=True,
    help="A secret every request must carry (needed to listen beyond loopback).",
)
@guarded  # fmt: skip
def dashboard(host: str, port: int, token: str | None) -> None:
    """Serve a live web dashboard over the journal: runs, experiments, reviews."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"--host {host} is reachable beyond this machine; pass --token (or set "
            "RATCHET_DASHBOARD_TOKEN) so that every request must carry it"
        )
    if token is not None and len(token) < 8:
        raise UsageError("--token: use at least 8 characters")
    from ratchet.dashboard.server import serve

    project = _project()
    _spec(project)  # a broken spec is a one-line error now, not on the first page
    serve(project, host, port, token)
