"""The dashboard's FastAPI app: HTML pages, a JSON API under `/api/` (in the app's
OpenAPI schema), and a server-sent event stream per run.

It reads the journal read-only, per request (`runview.reading`), and writes only
through `approvals.record_verdict`, as `ratchet review approve|reject` does. Pages are
Jinja2 templates with autoescape on; the page script builds the DOM with `textContent`
only. Nothing is loaded from the network.

Access: with a token, every request carries it (an `Authorization: Bearer` header, an
`X-Ratchet-Token` header, the `ratchet_token` cookie, or `?token=` once, which sets the
cookie). Without one (loopback only), requests must name a loopback host (no DNS
rebinding), and a write must come as JSON from the dashboard's own origin (no
cross-site form posts).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ratchet.dashboard import data
from ratchet.dashboard.diff import diff_lines
from ratchet.dashboard.tally import Tallies
from ratchet.errors import UsageError

HERE = Path(__file__).parent
COOKIE = "ratchet_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
POLL = 1.0  # seconds between two looks at the journal for a page's live stream
Handler = Callable[[Request], Awaitable[Response]]


class VerdictBody(BaseModel):
    note: str = Field(default="", max_length=2000)


def create_app(root: Path, token: str | None = None, budgets: dict[str, float] | None = None,
               poll: float = POLL) -> FastAPI:  # fmt: skip
    """The app for the project at `root`. `budgets` are the seconds each stage may
    take (`proposing`, `measuring`): the budget bars of experiments in flight."""
    app = FastAPI(title="ratchet dashboard", version="1", docs_url="/api/docs",
                  redoc_url=None, openapi_url="/api/openapi.json")  # fmt: skip
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    stage_budgets = budgets or {}
    tallies = Tallies()  # each run's counts, folded once and then kept up to date
    app.state.warm = threading.Event()  # set once every run's counts are folded

    def warm_up() -> None:  # the first fold of a long run takes a second: not in a request
        with contextlib.suppress(Exception):  # a request would then say what is wrong
            if (root / ".ratchet" / "journal.db").exists():
                data.runs(root, tallies)
        app.state.warm.set()

    threading.Thread(target=warm_up, name="ratchet-dashboard-warm-up", daemon=True).start()

    @app.middleware("http")
    async def guard(request: Request, call_next: Handler) -> Response:
        refusal = _refusal(request, token)
        if refusal is not None:
            return refusal
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
            " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if token is not None and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(UsageError)
    async def usage_error(request: Request, error: UsageError) -> JSONResponse:
        status = 404 if isinstance(error, data.NotFound) else 400
        return JSONResponse({"detail": str(error)}, status_code=status)

    # the JSON API ------------------------------------------------------------------
    @app.get("/api/runs", tags=["runs"])
    def api_runs() -> list[dict[str, Any]]:
        """Every run: metric, baseline, best, counts."""
        return data.runs(root, tallies)

    @app.get("/api/runs/{run}", tags=["runs"])
    def api_run(run: str) -> dict[str, Any]:
        """A run's summary: baseline, best, counts, decisions, experiments in flight."""
        return data.summary(root, run, tallies, stage_budgets)

    @app.get("/api/runs/{run}/points", tags=["runs"])
    def api_points(
        run: str,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=20_000)] = 2000,
    ) -> Response:
        """The progress chart's points (decided experiments after id `after`), as rows
        `[id, decision, value, baseline]`; page on with `after` = `last`."""
        found = data.points(root, run, after, limit)  # plain JSON: no per-item encoding
        return Response(json.dumps(found, allow_nan=False), media_type="application/json")

    @app.get("/api/runs/{run}/experiments", tags=["experiments"])
    def api_experiments(
        run: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        decision: str | None = None,
        category: str | None = None,
        before: Annotated[int | None, Query(ge=1)] = None,
    ) -> dict[str, Any]:
        """A page of the run's experiments, newest first, filtered by decision or category.
        `before` (a page's `next_before`) pages on without an offset to skip."""
        return data.experiments(root, run, tallies, offset, limit, decision, category, before)

    @app.get("/api/runs/{run}/keeps", tags=["review"])
    def api_keeps(run: str) -> dict[str, Any]:
        """The run's keeps after the baseline with their review state."""
        return data.keeps(root, run)

    @app.get("/api/experiments/{experiment}", tags=["experiments"])
    def api_experiment(experiment: int) -> dict[str, Any]:
        """One experiment: patch, measurements with their output tails, why, cost."""
        return data.experiment(root, experiment)

    @app.post("/api/experiments/{experiment}/approve", tags=["review"])
    def api_approve(experiment: int, body: VerdictBody) -> dict[str, Any]:
        """Approve a keep (recorded in the journal's approvals and audit tables)."""
        return data.verdict(root, experiment, True, body.note)

    @app.post("/api/experiments/{experiment}/reject", tags=["review"])
    def api_reject(experiment: int, body: VerdictBody) -> dict[str, Any]:
        """Reject a keep, with a note (recorded as `approve` is)."""
        return data.verdict(root, experiment, False, body.note)

    @app.get("/api/runs/{run}/events", tags=["runs"], response_class=StreamingResponse)
    async def api_events(request: Request, run: str, after: int = 0) -> StreamingResponse:
        """Server-sent events: an `update` (new points after `after`, the summary) each
        time the journal changes."""
        await run_in_threadpool(data.summary, root, run, tallies, stage_budgets)  # a 404 now

        async def stream() -> AsyncIterator[str]:
            last, seen = after, ""
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                summary = await run_in_threadpool(data.summary, root, run, tallies, stage_budgets)
                fresh = await run_in_threadpool(data.points, root, run, last, 2000)
                state = json.dumps({k: v for k, v in summary.items() if k != "now"},
                                   sort_keys=True, default=str)  # fmt: skip
                if fresh["points"] or state != seen:
                    last, seen = fresh["last"], state
                    payload = {"summary": summary, "points": fresh["points"], "last": last}
                    yield f"event: update\ndata: {json.dumps(payload, default=str)}\n\n"
                else:
                    yield ": still here\n\n"
                await asyncio.sleep(poll)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    # pages -------------------------------------------------------------------------
    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Response:
        runs = data.runs(root, tallies) if (root / ".ratchet" / "journal.db").exists() else []
        if len(runs) == 1 and not request.query_params.get("all"):
            return RedirectResponse(f"/runs/{quote(runs[0]['name'], safe='')}", status_code=303)
        return page(request, "index.html", runs=runs)

    @app.get("/runs/{run}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, run: str) -> HTMLResponse:
        summary = _or_404(lambda: data.summary(root, run, tallies, stage_budgets))
        return page(request, "run.html", run=summary)

    @app.get("/runs/{run}/experiments", response_class=HTMLResponse, include_in_schema=False)
    def table_page(
        request: Request,
        run: str,
        page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
        per_page: Annotated[int, Query(ge=10, le=500)] = 50,
        decision: str | None = None,
        category: str | None = None,
    ) -> HTMLResponse:
        found = _or_404(lambda: data.experiments(root, run, tallies, (page_number - 1) * per_page,
                                                 per_page, decision or None, category or None))  # fmt: skip
        pages = max(1, -(-found["total"] // per_page))
        from ratchet.decisions import Category, Decision

        return page(request, "experiments.html", run=run, found=found, page=page_number,
                    pages=pages, per_page=per_page, decision=decision or "",
                    category=category or "", decisions=[d.value for d in Decision],
                    categories=[c.value for c in Category])  # fmt: skip

    @app.get("/experiments/{experiment}", response_class=HTMLResponse, include_in_schema=False)
    def experiment_page(request: Request, experiment: int) -> HTMLResponse:
        found = _or_404(lambda: data.experiment(root, experiment))
        return page(request, "experiment.html", e=found, diff=diff_lines(found["patch"]))

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare_page(request: Request, runs: Annotated[list[str] | None, Query()] = None
                     ) -> HTMLResponse:  # fmt: skip
        every = data.runs(root, tallies) if (root / ".ratchet" / "journal.db").exists() else []
        chosen = [r for r in every if not runs or r["name"] in runs]
        return page(request, "compare.html", runs=chosen, every=every)

    return app


def _or_404(build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return build()
    except data.NotFound as error:
        raise HTTPException(404, str(error)) from None
    except UsageError as error:
        raise HTTPException(400, str(error)) from None


def _carried(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return (request.headers.get("x-ratchet-token") or request.cookies.get(COOKIE)
            or request.query_params.get("token"))  # fmt: skip


def _refusal(request: Request, token: str | None) -> Response | None:
    """Why a request is refused, as a response; None when it may go on."""
    if token is not None:
        carried = _carried(request) or ""
        if not hmac.compare_digest(carried.encode(), token.encode()):
            return JSONResponse({"detail": "this dashboard needs its token"}, status_code=401)
    else:  # loopback without a token: only a page this machine asked for by name
        host = request.headers.get("host", "").rsplit(":", 1)[0]
        if host not in LOOPBACK_HOSTS:
            return JSONResponse({"detail": f"host {host!r} is not this dashboard's"},
                                status_code=403)  # fmt: skip
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            return JSONResponse({"detail": "a write must come from the dashboard's own page"},
                                status_code=403)  # fmt: skip
        if not request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"detail": "a write is a JSON request"}, status_code=415)
    return None
