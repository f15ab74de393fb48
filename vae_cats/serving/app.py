"""The FastAPI app: ``create_app`` assembles the routers of ``serving/routers/``, the shared
state, the error handlers and the middleware; it defines no route itself.

Model calls run in sync routes or ``run_in_threadpool``, never on the event loop, so
``/healthz`` answers while a large ``/generate`` runs. By default the model loads in a
background thread at start-up: ``/readyz`` says 503 until it is loaded, model routes answer
503 meanwhile. ``app_from_environment`` is the factory uvicorn's workers import.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from vae_cats.serving.batching import BusyError
from vae_cats.serving.inputs import one_line
from vae_cats.serving.limits import BodyLimitMiddleware
from vae_cats.serving.metrics import Metrics, MetricsMiddleware
from vae_cats.serving.routers import generation, health, page, reconstruction
from vae_cats.serving.settings import Settings
from vae_cats.serving.state import ServingState

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The API serving ``settings.model`` with ``settings.backend``."""
    state = ServingState(settings, Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.load_in_background:
            threading.Thread(target=state.load, name="load-model", daemon=True).start()
        else:
            await run_in_threadpool(state.load)
        yield
        if state.service is not None:
            state.service.close()
        state.metrics.worker_exited()

    app = FastAPI(
        title="vae_cats",
        summary="Generate, reconstruct and interpolate 64x64 cat faces with a VAE",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(BusyError, busy)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
    routers = (page.router, health.router, generation.router, reconstruction.router)
    for router in routers:
        app.include_router(router)
    page.mount_static(app)
    # The metrics label requests with the route template: the routers' own routes (the app
    # holds each included router as one opaque entry), then the app's (docs, static files).
    routes = [route for router in routers for route in router.routes] + app.router.routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=routes)
    return app


def app_from_environment() -> FastAPI:
    """``create_app`` with the settings the serving CLI put in the environment: the factory
    each uvicorn worker imports (``vae_cats.serving.app:app_from_environment``)."""
    return create_app(Settings.from_environment())


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = one_line(list(exc.errors()), request.headers.get("content-type"))
    return JSONResponse({"detail": detail}, status_code=422)


async def busy(request: Request, exc: BusyError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
