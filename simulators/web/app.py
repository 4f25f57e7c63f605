"""Assemble the FastAPI application served by ``segur-sim serve``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from simulators import DISCLAIMER, __version__
from simulators.mss.http_routes import build_router
from simulators.mss.services import MssServices


def create_app(services: MssServices, endpoints: Callable[[], dict[str, Any]]) -> FastAPI:
    app = FastAPI(
        title="segur-sim",
        version=__version__,
        description=DISCLAIMER,
    )

    # Errors are always JSON, never a stack trace.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": exc.errors()}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"internal error in the simulator: {type(exc).__name__}"}, status_code=500
        )

    app.include_router(build_router(services, endpoints))
    # The other simulators' routes; imported here so that the mail servers do not pay
    # for lxml/saxon or the CNDA catalogue unless the web app is built.
    from simulators.cnda.api import build_router as build_cnda_router
    from simulators.cnda.service import CndaService
    from simulators.interop.api import router as interop_router

    app.include_router(build_cnda_router(CndaService(services.db, services.data, pki=services.pki)))
    app.include_router(interop_router)
    return app
