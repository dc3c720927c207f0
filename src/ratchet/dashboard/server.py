"""`ratchet dashboard`: the app served by uvicorn until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

from ratchet.dashboard.app import create_app


def budgets_of(root: Path) -> dict[str, float]:
    """The seconds a stage may take, from the spec: the budget bars."""
    from ratchet.project import Project

    spec = Project(root).spec
    return {"proposing": spec.proposer.budget, "measuring": spec.metric.budget}


def serve(root: Path, host: str, port: int, token: str | None) -> None:
    import uvicorn

    app = create_app(root, token, budgets_of(root))
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"ratchet dashboard on {where}" + (" (pass ?token=... once)" if token else ""),
          flush=True)  # fmt: skip
    # uvicorn's own access log would print each request's query string, a token with it
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
