"""The gateway's app factory, and ``run_gateway`` which serves it with uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.http_guard import BodyLimit, SecurityHeaders
from app.pages import router as pages_router
from app.resources import STATIC_DIR, open_resources
from app.routes import (
    admin,
    admin_reports,
    admin_status,
    audit,
    auth,
    edge_files,
    erasure,
    health,
    join,
    policy,
    reports,
    sessions,
    stream_stats,
    student_self,
    ws_live,
    ws_student,
)
from classpulse import __version__
from classpulse.settings import Settings, get_settings, with_signing_key

log = logging.getLogger(__name__)


class ErrorOut(BaseModel):
    """Every error answer: one readable line saying what is wrong."""

    detail: str


def _validation_message(exc: RequestValidationError) -> str:
    """One readable line, e.g. "body.title: String should have at least 1 character"."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default detail is a list of dicts; clients get one clear message instead.
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _validation_message(exc)}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway; resources are created in the lifespan, once per running app."""
    settings = with_signing_key(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings) as res:
            log.info("gateway ready (env=%s)", settings.env)
            yield {"res": res}  # lifespan state: reaches every request as request.state.res

    app = FastAPI(
        title="ClassPulse",
        version=__version__,
        lifespan=lifespan,
        # The interactive docs stay on in production: the API is the product's contract.
        docs_url="/docs",
        redoc_url=None,
        # Documented as sent: the validation handler answers {"detail": "<one line>"}.
        responses={422: {"model": ErrorOut, "description": "Invalid request (which field, why)"}},
    )
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    # API and WebSocket endpoints, one router per job, then the pages.
    for module in (
        auth,
        admin,
        sessions,
        reports,  # history, reports, alerts
        stream_stats,
        join,
        student_self,
        policy,  # admin: the privacy policy, the audit log, erasure on request, exports
        audit,
        erasure,
        admin_reports,
        admin_status,  # admin: workers, streams, counters, models, database and Redis
        health,
        ws_student,
        ws_live,
        edge_files,  # the detectors and the wasm runtime student pages run (edge capture)
    ):
        app.include_router(module.router)
    app.include_router(pages_router)
    # check_dir=False: a checkout may not have the folder yet (git keeps no empty folders).
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    # Outermost last: headers go on every answer, including the body cap's 413.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders, production=settings.env == "production")
    return app


def run_gateway(settings: Settings) -> None:
    """Serve the gateway with uvicorn on settings.host:settings.port (blocks until stopped)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        # Browsers offer permessage-deflate; on JPEG it costs ~15% CPU and saves nothing.
        ws_per_message_deflate=False,
        # HTTPS served here (`classpulse run --lan`, or the school's own certificate).
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        # Larger messages close the socket at the protocol level; those between frame_max_bytes
        # and this get a too_large ack instead, so a page learns why.
        ws_max_size=max(4 * settings.frame_max_bytes, 1 << 20),
        # Trust X-Forwarded-For/Proto only from the proxies in CLASSPULSE_FORWARDED_ALLOW_IPS:
        # login and join limits count per client address, which behind the TLS proxy only
        # that header knows; from anyone else the header is ignored (it could be forged).
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,  # open WebSockets would otherwise hold shutdown forever
    )
