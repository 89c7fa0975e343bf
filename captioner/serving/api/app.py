"""The app factory and ``serve``: one ``CaptionService`` per app, the routers, the error handlers and the
body-size guard."""
from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from .errors import add_error_handlers
from .middleware import MAX_BODY_BYTES, GuardMiddleware
from .routes import ROUTERS
from .service import DEFAULT_MAX_BATCH, DEFAULT_MAX_LANGUAGES, CaptionService, ModelSource

API_VERSION = "1"
DESCRIPTION = ("Captions for photos, with calibrated confidence, and the captions spoken aloud. Each caption "
               "record is the JSON object `python -m captioner caption --json` prints. Every failure is "
               "`{\"error\": message}`.")


def create_app(model: ModelSource = None, weights: str | Path | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_body: int = MAX_BODY_BYTES, preload: bool = True,
               max_languages: int = DEFAULT_MAX_LANGUAGES) -> FastAPI:
    """The FastAPI app. ``model``: a loaded Captioner, a function returning one, or a model folder (None:
    the default model); its language is the default (``?lang=`` asks for another, loaded on first use, at
    most ``max_languages`` kept loaded). ``preload`` starts loading it in the background at start-up (else
    on first use)."""
    service = CaptionService(model, weights, max_batch=max_batch, max_languages=max_languages)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if preload and not service.loaded:
            threading.Thread(target=service.load_quietly, name="captioner-load", daemon=True).start()
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(title="captioner", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(GuardMiddleware, max_body=max_body)
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model: str | Path | None = None,
          weights: str | Path | None = None, max_batch: int = DEFAULT_MAX_BATCH, log_level: str = "info",
          max_languages: int = DEFAULT_MAX_LANGUAGES) -> None:
    """Run the API with uvicorn until interrupted (loopback only unless ``host`` says otherwise)."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    uvicorn.run(create_app(model, weights, max_batch=max_batch, max_languages=max_languages), host=host, port=port,
                log_level=log_level)
