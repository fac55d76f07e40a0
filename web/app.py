"""The status API and dashboard as an ASGI app: ``uvicorn web.app:create_app --factory``.

The app holds only the :class:`Context` (settings and fleet). The database engine is made on the first request
of each process (``store.db.get_engine`` keys it by pid), so a forking server never shares a pool.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from switchyard.errors import InputError, NotFound, NotYetSent, ServiceUnavailable
from tasks import telemetry
from tasks.context import Context, build_context
from web import admin, api, multienv, reports
from web.auth import ADMIN, AUTH_ERRORS, READ
from web.deps import ERROR_RESPONSES, validation_message
from web.metrics import router as metrics_router

STATIC = Path(__file__).resolve().parent / "static"
UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a missing table (SQLite says it with an OperationalError)


def create_app(context: Context | None = None) -> FastAPI:
    """A new app for ``context`` (built from the environment when None). ``/docs`` (Swagger UI) and ``/redoc`` are
    served from files shipped in the installed ``fastapi-offline`` package: they render with no internet."""
    app = FastAPIOffline(
        title="Switchyard",
        summary="Status, tasks and costs of a Switchyard fleet.",
        version="0.1.0",
        responses=ERROR_RESPONSES,
    )
    if context is None:  # the API's own process: its log format and, with an OTLP endpoint, its traces
        context = build_context()
        telemetry.configure_logging()
        telemetry.instrument_celery("switchyard-api")
    app.state.context = context
    # Every data route needs a token of at least read (web/auth.py; the POSTs of api.router need submit, the
    # admin routes admin); liveness and the static pages (they hold no data) answer anyone.
    app.add_api_route("/healthz", healthz, tags=["health"], summary="Liveness: 200 while the process serves")
    app.include_router(multienv.router, dependencies=[READ], responses=AUTH_ERRORS)
    app.include_router(api.router, dependencies=[READ], responses=AUTH_ERRORS)
    app.include_router(metrics_router, dependencies=[READ], responses=AUTH_ERRORS)
    app.include_router(admin.router, dependencies=[ADMIN], responses=AUTH_ERRORS)
    app.include_router(admin.audit_router, dependencies=[ADMIN], responses=AUTH_ERRORS)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/", dashboard, include_in_schema=False)
    app.include_router(reports.router, dependencies=[READ], responses=AUTH_ERRORS)
    app.add_api_route("/costs", reports.costs_page, include_in_schema=False)
    app.add_api_route("/costs/vega.js", reports.vega_js, include_in_schema=False)
    _add_error_handlers(app)
    return app


def healthz() -> dict[str, bool]:
    """Answers without a token and without touching the database: the process is up and serving."""
    return {"ok": True}


def dashboard() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


def _add_error_handlers(app: FastAPI) -> None:
    """Errors leave as ``{"error": message}`` with the status that says what the caller should do."""

    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    async def bad_input(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this class only
        return JSONResponse({"error": validation_message(exc.errors())}, status_code=422)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this class only
        if exc.status_code == 400:  # a body that is not UTF-8 JSON: bad input like any other, said the same way
            return JSONResponse({"error": f"invalid request: the body is not JSON in UTF-8 ({exc.detail})"}, 422)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, NotYetSent):  # recorded: a client that retries a 503 must not submit it twice
            return JSONResponse({"error": str(exc), "id": exc.task_id, "sent": False}, status_code=503)
        return JSONResponse({"error": str(exc)}, status_code=503)

    async def database_error(_request: Request, exc: Exception) -> JSONResponse:
        # The class only: a driver's message may quote SQL parameters or the server's address.
        message = f"the database failed ({type(exc).__name__}); see GET /api/multi-env/health"
        return JSONResponse({"error": message}, status_code=503)

    async def programming_error(request: Request, exc: Exception) -> JSONResponse:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) == UNDEFINED_TABLE:  # PostgreSQL before db upgrade
            return await database_error(request, exc)
        raise exc  # anything else is a bug: a 500, to be fixed

    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(InputError, bad_input)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ServiceUnavailable, unavailable)
    # Only what says the database is away or not ready (unreachable, locked, no tables yet) is a 503; any other
    # database error is a bug in Switchyard (input never reaches SQL unchecked) and stays a 500, to be fixed.
    for unreachable in (OperationalError, InterfaceError, DisconnectionError, PoolTimeout):
        app.add_exception_handler(unreachable, database_error)
    app.add_exception_handler(ProgrammingError, programming_error)
