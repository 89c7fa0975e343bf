"""One router per resource: health, models, captions, speech."""
from __future__ import annotations

from . import captions, health, models, speech

ROUTERS = (health.router, models.router, captions.router, speech.router)
