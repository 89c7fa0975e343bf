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
from .middleware import BODY_TIMEOUT_S, LOOPBACK_HOSTS, MAX_BODY_BYTES, AccessMiddleware, GuardMiddleware
from .routes import ROUTERS
from .service import (DEFAULT_MAX_BATCH, DEFAULT_MAX_LANGUAGES, SPEECH_THREADS, WORK_THREADS, BoundedPool,
                      CaptionService, ModelSource)

log = logging.getLogger("captioner.api")
TOKEN_ENV = "CAPTIONER_API_TOKEN"

API_VERSION = "1"
DESCRIPTION = ("Captions for photos, with calibrated confidence, and the captions spoken aloud. Each caption "
               "record is the JSON object `python -m captioner caption --json` prints. Every failure is "
               "`{\"error\": message}`.")


def create_app(model: ModelSource = None, weights: str | Path | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_body: int = MAX_BODY_BYTES, preload: bool = True,
               max_languages: int = DEFAULT_MAX_LANGUAGES, allowed_hosts: tuple[str, ...] | list[str] = (),
               token: str | None = None, body_timeout: float = BODY_TIMEOUT_S,
               speech_threads: int = SPEECH_THREADS) -> FastAPI:
    """The FastAPI app. ``model``: a loaded Captioner, a function returning one, or a model folder (None:
    the default model); its language is the default (``?lang=`` asks for another, loaded on first use, at
    most ``max_languages`` kept loaded). ``preload`` starts loading it in the background at start-up (else
    on first use). Requests must name this machine in their Host header (localhost, 127.0.0.1, [::1], plus
    ``allowed_hosts``); with ``token`` every route but /healthz needs ``Authorization: Bearer <token>``.
    Speech runs on its own ``speech_threads`` threads (503 when all are busy), apart from captioning."""
    service = CaptionService(model, weights, max_batch=max_batch, max_languages=max_languages)
    speech_pool = BoundedPool(speech_threads, "captioner-speech",
                              f"the voices are busy ({speech_threads} texts being spoken): try again shortly")
    work_pool = BoundedPool(WORK_THREADS, "captioner-work")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if preload and not service.loaded:
            threading.Thread(target=service.load_quietly, name="captioner-load", daemon=True).start()
        yield
        await asyncio.to_thread(service.stop)
        speech_pool.shutdown()
        work_pool.shutdown()

    app = FastAPI(title="captioner", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.state.speech_pool = speech_pool
    app.state.work_pool = work_pool
    app.add_middleware(GuardMiddleware, max_body=max_body, body_timeout=body_timeout)
    app.add_middleware(AccessMiddleware, allowed_hosts=(*LOOPBACK_HOSTS, *allowed_hosts), token=token or None)
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model: str | Path | None = None,
          weights: str | Path | None = None, max_batch: int = DEFAULT_MAX_BATCH, log_level: str = "info",
          max_languages: int = DEFAULT_MAX_LANGUAGES, allowed_hosts: tuple[str, ...] | list[str] = (),
          token: str | None = None, body_timeout: float = BODY_TIMEOUT_S,
          limit_concurrency: int | None = 64) -> None:
    """Run the API with uvicorn until interrupted (loopback only unless ``host`` says otherwise). ``token``
    (default: the CAPTIONER_API_TOKEN environment variable) is required of every request but /healthz;
    ``host`` itself, when it is a name or address other than a wildcard, is added to ``allowed_hosts``;
    more than ``limit_concurrency`` open connections are answered 503 by uvicorn."""
    import os

    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    token = token or os.environ.get(TOKEN_ENV) or None
    hosts = list(allowed_hosts)
    if host not in ("0.0.0.0", "::", "") and host not in LOOPBACK_HOSTS:
        hosts.append(host)
    if not is_loopback(host) and token is None:
        log.warning("listening on %s without a token: anyone who can reach this port can use the API "
                    "(set --token or %s)", host, TOKEN_ENV)
    uvicorn.run(create_app(model, weights, max_batch=max_batch, max_languages=max_languages, allowed_hosts=hosts,
                           token=token, body_timeout=body_timeout),
                host=host, port=port, log_level=log_level, limit_concurrency=limit_concurrency)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (localhost, 127.x.x.x, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
