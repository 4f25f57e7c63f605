"""REST routes of conformance runs, served by ``segur-sim serve`` (`/api/mss/...`).

Runs started over HTTP run inside the server's event loop. For safety they can only be
driven by a person or by the built-in reference client (optionally with one of its
faults): arbitrary driver commands are for the command line (`segur-sim mss run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import shlex
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field

from simulators import DISCLAIMER
from simulators.mss.conformance.catalogue import CatalogueError, default_catalogue
from simulators.mss.conformance.coverage import coverage_rows

if TYPE_CHECKING:
    from simulators.mss.conformance.runner import Runner
    from simulators.mss.conformance.runs import RunRecord
    from simulators.serve import Simulator

log = logging.getLogger("segur_sim")
CANCELLED_OVER_API = "cancelled by the operator (DELETE /api/mss/runs/{id})"
STOPPED_WITH_SERVER = "stopped before its end: the simulator shut down"


class RunCreate(BaseModel):
    suite: str = Field(description="per-org, app or extra")
    mailbox: str = Field(description="the mailbox under test")
    nil: str = Field(description="the product reference expected in X-MSS-NIL")
    tests: list[str] = Field(default_factory=list, description="a subset of the suite")
    client: Literal["person", "reference"] = "person"
    fault: str | None = Field(None, description="a reference-client fault (client=reference)")
    step_timeout: float | None = Field(None, gt=0, le=3600)
    settle: float = Field(2.0, ge=0, le=60)


def reference_client_command(fault: str | None = None, *, serve: bool = False) -> str:
    """The reference client as a driver command; ``serve``: the long-lived driver mode."""
    parts = [sys.executable, "-m", "simulators.mss.refclient"]
    if fault:
        parts += ["--fault", fault]
    if serve:
        parts.append("--serve")
    return shlex.join(parts)


class RunService:
    """One run at a time per simulator (every connection is attributed to it)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.current: RunRecord | None = None
        self.task: asyncio.Task[None] | None = None
        self.events: list[dict[str, Any]] = []
        self.cancel_reason: str | None = None

    @functools.cached_property
    def runner(self) -> Runner:
        """Made by the first use (a run, a runs page), not at ``serve`` start-up."""
        from simulators.mss.conformance.runner import Runner

        return Runner(self.sim)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, body: RunCreate) -> RunRecord:
        from simulators.mss.conformance import report
        from simulators.mss.conformance.runner import RunRequest

        if self.busy:
            assert self.current is not None
            raise HTTPException(409, f"run {self.current.run_id} is in progress")
        if body.fault and body.client != "reference":
            raise HTTPException(422, "a fault needs client=reference")
        request = RunRequest(
            suite=body.suite,
            mailbox=body.mailbox,
            nil=body.nil,
            tests=tuple(t.upper() for t in body.tests),
            # Our own client runs as a long-lived driver: one start per run, not per step.
            client_cmd=(
                reference_client_command(body.fault, serve=True)
                if body.client == "reference"
                else None
            ),
            driver="persistent" if body.client == "reference" else "per-step",
            step_timeout=body.step_timeout,
            settle=body.settle,
        )
        run = self.runner.plan(request)
        self.current = run
        self.events = []
        self.cancel_reason = None

        def listen(kind: str, data: dict[str, Any]) -> None:
            self.events.append({"kind": kind, **{k: v for k, v in data.items() if k != "tests"}})

        async def go() -> None:
            cancellation: dict[str, Any] | None = None
            try:
                await self.runner.execute(run, request, listen)
            except asyncio.CancelledError:
                # A cancelled run is judged as far as it went, and gets its proof too.
                reason = self.cancel_reason or STOPPED_WITH_SERVER
                cancellation = report.mark_cancelled(run, reason)
                listen("run-cancelled", dict(cancellation))
            try:
                report.write_proof(run, self.sim.services, cancellation=cancellation)
            except Exception:
                log.exception("run %s: the proof bundle could not be written", run.run_id)
            # shielded: a late cancel must not lose the proof directory in the store
            await asyncio.shield(self.runner.repo.save(run))

        self.task = asyncio.get_running_loop().create_task(go())
        return run

    async def stop(self, reason: str = STOPPED_WITH_SERVER) -> None:
        """Cancel the run in progress and wait until its proof bundle is written."""
        if self.task is not None and not self.task.done():
            if self.cancel_reason is None:  # the first request cancels; later ones wait
                self.cancel_reason = reason
                self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(self.task)


def build_router(runs: RunService) -> APIRouter:
    router = APIRouter(prefix="/api/mss", tags=["mss-runs"])

    @router.get("/suites")
    def suites() -> dict[str, Any]:
        catalogue = default_catalogue()
        return {
            "simulation": True,
            "suites": [
                {
                    "id": c.id,
                    "suite": c.suite,
                    "title": c.title,
                    "ansNames": list(c.ans_names),
                    "mailboxTypes": [t.value for t in c.mailbox_types],
                    "tests": [
                        {
                            "id": t,
                            "name": catalogue.tests[t].name,
                            "title": catalogue.tests[t].title,
                            "requirements": list(catalogue.tests[t].requirements),
                        }
                        for t in c.tests
                    ],
                    "rule": c.rule,
                }
                for c in catalogue.cases.values()
            ],
        }

    @router.get("/runs")
    def list_runs(limit: int = 50) -> dict[str, Any]:
        return {"simulation": True, "runs": runs.runner.repo.list(min(max(limit, 1), 500))}

    @router.post("/runs", status_code=202)
    async def start_run(body: RunCreate) -> dict[str, Any]:
        from simulators.mss.conformance.runner import RunError

        try:
            run = runs.start(body)
        except (RunError, CatalogueError) as exc:
            raise HTTPException(422, str(exc)) from None
        return {"runId": run.run_id, "status": run.status.value, "disclaimer": DISCLAIMER}

    @router.get("/runs/{run_id}")
    def get_run(run_id: str) -> dict[str, Any]:
        if runs.current is not None and runs.current.run_id == run_id:
            document = runs.current.as_dict()
            document["events"] = runs.events[-200:]
            document["inProgress"] = runs.busy
        else:
            stored = runs.runner.repo.get(run_id)
            if stored is None:
                raise HTTPException(404, f"unknown run {run_id}")
            document = {**stored, "inProgress": False}
        for test in document.get("tests", []):
            for step in test.get("steps", []):
                step.get("client", {}).pop("output", None)
        return {"simulation": True, "disclaimer": DISCLAIMER, **document}

    @router.delete("/runs/{run_id}")
    async def cancel_run(run_id: str) -> dict[str, Any]:
        if runs.current is None or runs.current.run_id != run_id or not runs.busy:
            raise HTTPException(409, f"run {run_id} is not in progress")
        await runs.stop(CANCELLED_OVER_API)
        run = runs.current
        return {"runId": run_id, "status": run.status.value, "proofDir": run.proof_dir}

    @router.get("/runs/{run_id}/proof.zip")
    def proof_zip(run_id: str) -> Response:
        stored = runs.runner.repo.get(run_id)
        if stored is None:
            raise HTTPException(404, f"unknown run {run_id}")
        if not stored.get("proofDir"):
            raise HTTPException(409, f"run {run_id} has no proof bundle yet")
        root = Path(stored["proofDir"])
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, f"{root.name}/{path.relative_to(root).as_posix()}")
        return Response(
            buf.getvalue(),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{root.name}.zip"'},
        )

    @router.get("/coverage")
    def coverage() -> dict[str, Any]:
        rows = coverage_rows(default_catalogue(), runs.runner.repo.latest_test_results())
        return {"simulation": True, "disclaimer": DISCLAIMER, "requirements": rows}

    return router
