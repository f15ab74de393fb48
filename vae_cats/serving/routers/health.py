"""Liveness, readiness, the model card and the Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from vae_cats.serving.state import Service, serving_state

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the model is loaded",
    responses={503: {"description": "still loading, or the model failed to load"}},
)
async def readyz(request: Request) -> JSONResponse:
    state = serving_state(request)
    if state.service is None:
        return JSONResponse({"detail": state.not_ready}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/model", summary="Model card: config, lineage, metrics, drift, latent directions")
def model(service: Service) -> dict[str, Any]:
    return service.card()


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus(request: Request) -> Response:
    # A sync route: reading every worker's files is disk work, kept off the event loop.
    return Response(serving_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
