"""What the routes are given: the app's one ``CaptionService``."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .service import CaptionService


def get_service(request: Request) -> CaptionService:
    """The service ``create_app`` made for this app."""
    return request.app.state.service


Service = Annotated[CaptionService, Depends(get_service)]
