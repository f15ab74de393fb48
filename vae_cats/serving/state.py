"""What the routers share, kept on ``app.state.serving``: the settings, the metrics and the
model service once loaded (or the reason it failed), and the dependency that hands the
service to a route."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from vae_cats.serving.metrics import Metrics
from vae_cats.serving.service import ModelService
from vae_cats.serving.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    """The app's settings and metrics, and its model service (None until loaded; ``error``
    says why it failed to load)."""

    settings: Settings
    metrics: Metrics
    service: ModelService | None = None
    error: str | None = None

    def load(self) -> None:
        """Load the model; on failure keep the first line of the error for ``/readyz``."""
        try:
            service = ModelService(self.settings, self.metrics.batch_images.observe)
        except Exception as err:  # noqa: BLE001 - reported by /readyz, one line
            log.error("model not loaded: %s", err)
            self.error = str(err).splitlines()[0] if str(err) else type(err).__name__
            return
        lineage = service.lineage
        self.metrics.model.labels(
            self.settings.model.name,
            str(lineage.get("git_commit") or "unknown"),
            str(lineage.get("data_hash") or "unknown"),
            service.backend.name,
        ).set(1)
        self.service = service

    @property
    def not_ready(self) -> str:
        return self.error or "the model is still loading"


def serving_state(request: Request) -> ServingState:
    """The ``ServingState`` of the app serving ``request``."""
    state: ServingState = request.app.state.serving
    return state


async def loaded_service(request: Request) -> ModelService:
    """The loaded model service.

    Raises:
        HTTPException: 503 while the model loads, or naming why it failed to load.
    """
    state = serving_state(request)
    if state.service is None:
        raise HTTPException(status_code=503, detail=state.not_ready)
    return state.service


Service = Annotated[ModelService, Depends(loaded_service)]
