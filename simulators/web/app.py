"""Assemble the FastAPI application served by ``segur-sim serve``.

One app for the HTTP and HTTPS ports: PSC, CRL, autoconfig, the REST API (MSS, CNDA,
validations, EVS) and the web console. The console answers on HTTPS only; see
docs/web.md for the pages, the API and the security choices (CSRF, upload limits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from simulators import DISCLAIMER, __version__
from simulators.mss.http_routes import build_router
from simulators.mss.services import MssServices
from simulators.web.security import DEFAULT_MAX_UPLOAD, BodyLimit, OriginGuard

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
# Paths whose request bodies are limited to ``max_upload_bytes`` (the CNDA API and the
# EVS endpoint keep their own, larger limits).
LIMITED_PREFIXES = (
    "/api/mss",
    "/api/validations",
    "/mailboxes",
    "/webmail",
    "/validators",
    "/cnda",
)


def _simple(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:200]
    return None


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Validation errors as plain JSON (inputs may be bytes or hold exceptions)."""
    cleaned = []
    for error in exc.errors():
        cleaned.append(
            {
                "type": str(error.get("type", "")),
                "loc": [x if isinstance(x, int) else str(x) for x in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "input": _simple(error.get("input")),
            }
        )
    return cleaned


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route accepts on this path (Starlette names only the first)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def create_app(
    services: MssServices,
    endpoints: Callable[[], dict[str, Any]],
    *,
    extra_routers: Sequence[APIRouter] = (),
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
) -> FastAPI:
    """The app. ``extra_routers`` are included as they are (the runner's API, say)."""
    app = FastAPI(
        title="segur-sim",
        version=__version__,
        description=(
            f"{DISCLAIMER}\n\nREST API of the local Ségur test environments: MSS test "
            "mailboxes, PSC tokens and messages (`/api/mss`), validations "
            "(`/api/validations`, and Gazelle EVS at `/evs/rest`), the CNDA mock "
            "(`/api/cnda`). No login: it listens on loopback only. Unsafe methods from "
            "a browser must come from the console's own origin. Errors are JSON "
            '`{"detail": ...}`.'
        ),
    )
    app.state.console_url = lambda: (endpoints() or {}).get("console_url")

    # Errors are always JSON, never a stack trace.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(app, request)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_errors(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"internal error in the simulator: {type(exc).__name__}"}, status_code=500
        )

    app.add_middleware(BodyLimit, limit=max_upload_bytes, prefixes=LIMITED_PREFIXES)
    app.add_middleware(OriginGuard)

    app.include_router(build_router(services, endpoints))
    # The other simulators' routes; imported here so that the mail servers do not pay
    # for lxml/saxon or the CNDA catalogue unless the web app is built.
    from simulators.cnda.api import build_router as build_cnda_router
    from simulators.cnda.service import CndaService
    from simulators.interop.api import router as interop_router
    from simulators.web import api_mss, api_validations, console

    cnda = CndaService(services.db, services.data, pki=services.pki)
    app.include_router(build_cnda_router(cnda))
    from simulators.interop.store import SqliteValidationRepository

    # Validations (API and console) are recorded in the store, like every other run.
    app.state.interop_repository = SqliteValidationRepository(services.db)
    app.include_router(interop_router)
    app.include_router(api_mss.build_router(services))
    app.include_router(api_validations.build_router())
    for router in extra_routers:
        app.include_router(router)
    app.include_router(console.build_router(services, endpoints, cnda))

    static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:
            raise HTTPException(404, f"no static file {name}")
        return Response(
            static[name],
            media_type=STATIC_FILES[name],
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    return app
