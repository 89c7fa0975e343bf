"""A local HTTP API over the library: ``python -m captioner serve`` (FastAPI + uvicorn).

    POST /v1/captions   images (multipart field ``images``, or a raw ``image/*`` body) -> {"results": [...]}
    POST /v1/speech     {"text", "lang", "engine"} -> audio bytes (audio/mpeg or audio/wav)
    GET  /v1/models     the model folders, which one is loaded and which is the default
    GET  /healthz       cheap liveness/readiness; never waits on captioning
    GET  /docs          the generated OpenAPI page

Each result is exactly the JSON object ``caption --json`` prints (``batch.result_record``; its fields are
``records.CaptionRecord``, from which the OpenAPI schema of a result is built). The model is
loaded once per process (in the background at start-up, under a lock). Captioning runs on one worker
thread, so the event loop (and ``/healthz``) is never blocked and model calls are serialised; requests
that arrive while the model is busy, or within ``BATCH_WINDOW_S`` of each other, are gathered into one
``Captioner.caption`` call (one encoder batch) when they ask for the same decoding settings.

Every failure is a JSON ``{"error": message}``: 400 a Host header naming another machine, 401 a missing or
wrong token (when one is set), 403 a cross-origin POST, 408 a body that stopped arriving, 413 body too
large, 415 not an image type, 422 an unreadable image or bad settings, 503 the model or the voices
unavailable (or the speech threads all busy), 500 (no internals) for bugs, whose traceback goes to the
server's log.

The package: ``app.py`` (``create_app``, ``serve``), ``routes/`` (one router per resource), ``schemas.py``
(typed request and response bodies), ``service.py`` (the model and its batching worker; ``deps.py`` hands it to
the routes), ``middleware.py`` (Host/Origin/token checks, body-size guard and timeout, JSON 500) and ``errors.py`` (``{"error": message}``).
"""
from __future__ import annotations

from .app import API_VERSION, create_app, serve
from .errors import APIError
from .middleware import MAX_BODY_BYTES, AccessMiddleware, GuardMiddleware
from .routes.captions import MAX_IMAGES
from .schemas import MAX_SPEECH_CHARS
from .service import BATCH_WINDOW_S, DEFAULT_MAX_BATCH, CaptionService

__all__ = ["create_app", "serve", "CaptionService", "APIError", "GuardMiddleware", "AccessMiddleware", "API_VERSION", "MAX_BODY_BYTES",
           "MAX_IMAGES", "MAX_SPEECH_CHARS", "DEFAULT_MAX_BATCH", "BATCH_WINDOW_S"]
