"""``GET /healthz``: liveness and readiness, never waiting on captioning."""
from __future__ import annotations

from fastapi import APIRouter, Response

from ..deps import Service
from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, response_model_exclude_unset=True,
            summary="Liveness and readiness (never waits on captioning)",
            responses={503: {"model": Health, "description": "the model failed to load (error says why)"}})
async def healthz(service: Service, response: Response) -> Health:
    """Whether the model is loaded, still loading, or failed to load: then 503 with the reason, so a
    supervisor that only reads the status code sees the failure. Also how many caption requests wait."""
    health = Health(status="ok", model=service.model_name, model_state=service.state, queued=service.pending)
    if service.load_error:
        health.status = "failed"
        health.error = service.load_error
        response.status_code = 503
    return health
