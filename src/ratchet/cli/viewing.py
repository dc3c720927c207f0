"""Commands that show a run to people: report (a plot and a Markdown report) and
dashboard (a web page over the journal). Both only read the journal."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from ratchet.cli.common import JsonFlag, _print_json, _project, _spec, app, console, guarded
from ratchet.errors import UsageError

RunOption = Annotated[str | None, typer.Option("--run", help="The run (default: the newest one).")]


@app.command()
@guarded
def report(
    run: RunOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder to write into (default: .ratchet/reports/RUN/)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
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
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
@guarded
def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            help="A secret every request must carry (needed to listen beyond loopback).",
            envvar="RATCHET_DASHBOARD_TOKEN",
        ),
    ] = None,
) -> None:
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
