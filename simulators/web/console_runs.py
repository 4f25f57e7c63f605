"""The console's conformance-run pages: start a suite, follow it live, read its verdicts.

Pages (HTTPS, like the rest of the console):

- ``GET /runs``: the runs (status, suite, mailbox, NIL, times) and the form that starts
  one; ``POST /runs`` (CSRF token) starts it through the server's
  :class:`~simulators.mss.conformance.api.RunService` and redirects to its page.
- ``GET /runs/{id}``: a run. While it is live, ``console.js`` polls
  ``GET /api/mss/runs/{id}`` every second: progress, the current step and the
  instruction shown to the person, each verdict as it lands. ``POST /runs/{id}/cancel``
  stops it. Once finished: the proof bundle link (``/api/mss/runs/{id}/proof.zip``).
- ``GET /runs/coverage``: the requirement coverage table (``/api/mss/coverage``).

Runs need the RunService of a running simulator (``app.state.runs``, set by
``segur-sim serve``); without it the pages list stored runs and say how to start one.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from simulators.mss.conformance.catalogue import CatalogueError, default_catalogue
from simulators.mss.conformance.coverage import coverage_rows
from simulators.mss.conformance.runs import RunRepository
from simulators.web.security import check_csrf

if TYPE_CHECKING:
    from simulators.mss.conformance.api import RunService
    from simulators.web.console import Console

RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
FINISHED = {"pass", "fail", "error", "skip", "omit", "cancel"}


def fmt_time(value: Any) -> str:
    if not isinstance(value, int | float) or value <= 0:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def evidence_href(kind: str, ref: str) -> str | None:
    """Where a piece of evidence can be read in this simulator (None: nowhere)."""
    from urllib.parse import quote

    if kind == "session":
        return f"/api/mss/sessions/{quote(ref, safe='')}/transcript"
    if kind == "submission" and ref.isdigit():
        return f"/api/mss/submissions/{ref}/message"
    return None


def run_service(request: Request) -> RunService | None:
    return getattr(request.app.state, "runs", None)


def _faults() -> list[dict[str, str]]:
    from simulators.mss.refclient.faults import FAULTS

    return [
        {"name": f.name, "test": f.test_id, "types": "/".join(f.bal_types), "text": f.description}
        for f in FAULTS.values()
    ]


def _suites() -> list[dict[str, Any]]:
    catalogue = default_catalogue()
    return [
        {
            "suite": c.suite,
            "id": c.id,
            "title": c.title,
            "types": [t.value for t in c.mailbox_types],
            "tests": list(c.tests),
        }
        for c in catalogue.cases.values()
    ]


def add_routes(router: APIRouter, console: Console) -> None:
    """Add the runs pages to the console's router (which enforces HTTPS)."""
    services = console.services
    console.template_filters["ts"] = fmt_time
    console.template_globals["evidence_href"] = evidence_href
    repos: list[RunRepository] = []

    def repo(request: Request) -> RunRepository:
        runs = run_service(request)
        if runs is not None:
            return runs.runner.repo
        if not repos:
            repos.append(RunRepository(services.db))
        return repos[0]

    def runs_page(
        request: Request, *, error: str | None = None, form: Any = None, status_code: int = 200
    ) -> HTMLResponse:
        runs = run_service(request)
        return console.render(
            request,
            "runs.html",
            nav="runs",
            runs=repo(request).list(100),
            live=runs.current.run_id if runs is not None and runs.busy and runs.current else None,
            available=runs is not None,
            suites=_suites(),
            boxes=services.store.list_mailboxes(),
            faults=_faults(),
            error=error,
            form=form or {},
            status_code=status_code,
        )

    @router.get("/runs", response_class=HTMLResponse)
    def runs_list(request: Request) -> Any:
        return runs_page(request)

    @router.post("/runs", dependencies=[Depends(check_csrf)])
    async def runs_start(request: Request) -> Any:
        from simulators.mss.conformance.api import RunCreate
        from simulators.mss.conformance.runner import RunError

        form = await request.form()
        fields = {k: v.strip() for k, v in form.items() if isinstance(v, str)}
        runs = run_service(request)
        if runs is None:
            return runs_page(
                request,
                error="runs are started by a running simulator (segur-sim serve)",
                form=fields,
                status_code=409,
            )
        try:
            body = RunCreate(
                suite=fields.get("suite", ""),
                mailbox=fields.get("mailbox", ""),
                nil=fields.get("nil", ""),
                tests=[t for t in re.split(r"[\s,;]+", fields.get("tests", "")) if t],
                client=fields.get("client") or "person",  # type: ignore[arg-type]
                fault=fields.get("fault") or None,
                step_timeout=float(fields["step_timeout"]) if fields.get("step_timeout") else None,
                settle=float(fields["settle"]) if fields.get("settle") else 2.0,
            )
        except (ValidationError, ValueError) as exc:
            message = str(exc)
            if isinstance(exc, ValidationError):
                message = "; ".join(
                    f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
            return runs_page(request, error=message, form=fields, status_code=422)
        try:
            run = runs.start(body)
        except HTTPException as exc:
            code = exc.status_code
            return runs_page(request, error=str(exc.detail), form=fields, status_code=code)
        except (RunError, CatalogueError) as exc:
            return runs_page(request, error=str(exc), form=fields, status_code=422)
        return RedirectResponse(f"/runs/{run.run_id}", status_code=303)

    @router.get("/runs/coverage", response_class=HTMLResponse)
    def runs_coverage(request: Request) -> Any:
        rows = coverage_rows(default_catalogue(), repo(request).latest_test_results())
        return console.render(request, "coverage.html", nav="coverage", rows=rows)

    def document(request: Request, run_id: str) -> dict[str, Any]:
        if not RUN_ID.match(run_id):
            raise HTTPException(404, f"unknown run {run_id}")
        runs = run_service(request)
        if runs is not None and runs.current is not None and runs.current.run_id == run_id:
            doc = runs.current.as_dict()
            doc["events"] = runs.events[-200:]
            doc["inProgress"] = runs.busy
            return doc
        stored = repo(request).get(run_id)
        if stored is None:
            raise HTTPException(404, f"unknown run {run_id}")
        return {**stored, "events": [], "inProgress": False}

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> Any:
        doc = document(request, run_id)
        current = None
        for event in doc["events"]:
            if event.get("kind") == "step-start":
                current = event
            elif event.get("kind") in ("step-end", "run-end"):
                current = None
        done = sum(1 for t in doc.get("tests", []) if t.get("status") in FINISHED)
        from simulators.mss.conformance.runner import CORRESPONDENT_LOCAL

        return console.render(
            request,
            "run.html",
            nav="runs",
            run=doc,
            current=current if doc["inProgress"] else None,
            done=done,
            correspondent=f"{CORRESPONDENT_LOCAL}@{services.domain}",
        )

    @router.post("/runs/{run_id}/cancel", dependencies=[Depends(check_csrf)])
    async def run_cancel(request: Request, run_id: str) -> Any:
        runs = run_service(request)
        if runs is None or runs.current is None or runs.current.run_id != run_id or not runs.busy:
            raise HTTPException(409, f"run {run_id} is not in progress")
        await runs.stop("cancelled by the operator from the console (Cancel the run)")
        return RedirectResponse(f"/runs/{run_id}", status_code=303)
