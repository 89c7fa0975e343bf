"""``GET /healthz``: liveness and readiness, never waiting on captioning."""
from __future__ import annotations

from fastapi import APIRouter

from ..deps import Service
from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, response_model_exclude_unset=True,
            summary="Liveness and readiness (never waits on captioning)")
async def healthz(service: Service) -> Health:
    """Whether the model is loaded, still loading, or failed to load (then why), and how many caption
    requests are waiting."""
    health = Health(status="ok", model=service.model_name, model_state=service.state, queued=service.pending)
    if service.load_error:
        health.error = service.load_error
    return health
