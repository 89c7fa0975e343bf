"""A local HTTP API over the library: ``python -m captioner serve`` (FastAPI + uvicorn).

    POST /v1/captions   images (multipart field ``images``, or a raw ``image/*`` body) -> {"results": [...]}
    POST /v1/speech     {"text", "lang", "engine"} -> audio bytes (audio/mpeg or audio/wav)
    GET  /v1/models     the model folders, which one is loaded and which is the default
    GET  /healthz       cheap liveness/readiness; never waits on captioning
    GET  /docs          the generated OpenAPI page

Each result is exactly the JSON object ``caption --json`` prints (``batch.result_record``). The model is
loaded once per process (in the background at start-up, under a lock). Captioning runs on one worker
thread, so the event loop (and ``/healthz``) is never blocked and model calls are serialised; requests
that arrive while the model is busy, or within ``BATCH_WINDOW_S`` of each other, are gathered into one
``Captioner.caption`` call (one encoder batch) when they ask for the same decoding settings.

Every failure is a JSON ``{"error": message}``: 413 body too large, 415 not an image type, 422 an
unreadable image or bad settings, 503 the model or the voices unavailable, 500 (no internals) for bugs,
whose traceback goes to the server's log.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import DecodeConfig

if TYPE_CHECKING:
    from .captioner import Captioner

log = logging.getLogger("captioner.api")

MAX_BODY_BYTES = 25 * 1024 * 1024  # like the app's server.maxUploadSize (25 MB)
MAX_IMAGES = 32  # images per request
MAX_SPEECH_CHARS = 1000
DEFAULT_MAX_BATCH = 16  # images per encoder batch when requests are gathered (1 = one request per call)
BATCH_WINDOW_S = 0.005  # how long the worker waits for more requests before starting a batch
API_VERSION = "1"

ModelSource = Union["Captioner", Callable[[], "Captioner"], str, Path, None]


class APIError(Exception):
    """An expected failure: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------ the model

@dataclass
class _Job:
    images: list[bytes]
    names: list[str]
    decode: DecodeConfig
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class CaptionService:
    """One captioner per process: loaded once under a lock, used by one worker thread that gathers
    concurrent requests into shared ``Captioner.caption`` calls."""

    def __init__(self, model: ModelSource = None, weights: str | Path | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, window_s: float = BATCH_WINDOW_S):
        from .captioner import Captioner

        self._captioner = model if isinstance(model, Captioner) else None
        if self._captioner is not None:
            self._loader = lambda: model
        elif callable(model):
            self._loader = model
        else:
            self._loader = lambda: Captioner.load(model, weights)
        self.model_dir = Path(model) if isinstance(model, (str, Path)) else None
        self.max_batch = max(1, int(max_batch))
        self.window_s = window_s
        self.load_error: str | None = None
        self._load_lock = threading.Lock()
        self.model_lock = threading.Lock()  # every model call holds it
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopping = False
        self.calls = 0  # Captioner.caption calls made (each one encoder batch)
        self.images_done = 0

    # -- loading
    @property
    def loaded(self) -> bool:
        return self._captioner is not None

    def load(self):
        """The captioner, loading it on first use (once, whoever asks first); APIError 503 if it cannot load."""
        if self._captioner is not None:
            return self._captioner
        with self._load_lock:
            if self._captioner is None:
                from .model_folder import CheckpointError
                from .weights import WeightsError

                try:
                    self._captioner = self._loader()
                    self.load_error = None
                except (CheckpointError, WeightsError, OSError, ValueError) as err:
                    self.load_error = str(err)
                    log.error("model failed to load: %s", err)
                    raise APIError(503, f"the model is not available: {err}") from err
        return self._captioner

    @property
    def model_name(self) -> str | None:
        if self._captioner is not None:
            return Path(self._captioner.checkpoint.folder).name
        return self.model_dir.name if self.model_dir else None

    # -- captioning
    def submit(self, images: list[bytes], names: list[str], decode: DecodeConfig) -> concurrent.futures.Future:
        job = _Job(images, names, decode)
        with self._cond:
            if self._worker is None or not self._worker.is_alive():
                self._stopping = False
                self._worker = threading.Thread(target=self._run, name="captioner-worker", daemon=True)
                self._worker.start()
            self._queue.append(job)
            self._cond.notify()
        return job.future

    @property
    def pending(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)

    def _take(self) -> list[_Job] | None:
        """The next batch: the oldest job, plus jobs with the same settings that arrive within the window,
        up to ``max_batch`` images."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping and not self._queue:
                return None
            first = self._queue.popleft()
            batch, count = [first], len(first.images)
            deadline = time.monotonic() + self.window_s
            while count < self.max_batch:
                same = next((j for j in self._queue if j.decode == first.decode
                             and count + len(j.images) <= self.max_batch), None)
                if same is not None:
                    self._queue.remove(same)
                    batch.append(same)
                    count += len(same.images)
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                captioner = self.load()
                images = [img for j in live for img in j.images]
                names = [n for j in live for n in j.names]
                with self.model_lock:
                    results = captioner.caption(images, live[0].decode, names=names)
                self.calls += 1
                self.images_done += len(images)
            except BaseException as err:  # noqa: BLE001 - handed to each waiting request
                for j in live:
                    j.future.set_exception(err)
                continue
            start = 0
            for j in live:
                j.future.set_result(results[start:start + len(j.images)])
                start += len(j.images)


# ------------------------------------------------------------------------------------ middleware

class GuardMiddleware:
    """Outermost layer: bodies over ``max_body`` answered 413 (by Content-Length, and while reading, before
    the app sees them), and any unexpected exception answered as a JSON 500 with no internals (the
    traceback is logged here, server-side)."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                headers = dict(scope.get("headers") or [])
                length = headers.get(b"content-length")
                too_big = f"request body is larger than {self.max_body // 2**20} MB"
                try:
                    if length is not None and int(length) > self.max_body:
                        return await _send_json(send, 413, {"error": too_big})
                except ValueError:
                    return await _send_json(send, 400, {"error": "bad Content-Length header"})
                chunks, size = [], 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return await _send_json(send, 413, {"error": too_big})
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                body, replayed = b"".join(chunks), False

                async def replay():
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                return await self.app(scope, replay, tracked_send)
            return await self.app(scope, receive, tracked_send)
        except Exception:  # noqa: BLE001 - the one place bugs become a plain 500
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, {"error": "internal server error (the server log has the details)"})


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------ the app

class SpeechRequest(BaseModel):
    text: str = Field(..., min_length=1, max_length=MAX_SPEECH_CHARS, description="what to say")
    lang: str = Field("en", description="the caption's language, which sets the voice: en, de, zh, fr or es")
    engine: str = Field("auto", description="auto (gTTS, else espeak-ng), gtts or espeak")


def create_app(model: ModelSource = None, weights: str | Path | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_body: int = MAX_BODY_BYTES, preload: bool = True):
    """The FastAPI app. ``model``: a loaded Captioner, a function returning one, or a model folder (None:
    the default model). ``preload`` starts loading it in the background at start-up (else on first use)."""
    from .batch import result_record
    from .speech import ENGINES, LANGUAGES, SpeechError

    service = CaptionService(model, weights, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app):
        if preload and not service.loaded:
            threading.Thread(target=_quiet_load, args=(service,), name="captioner-load", daemon=True).start()
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(title="captioner", version=API_VERSION, lifespan=lifespan,
                  description="Captions for photos, with calibrated confidence, and the captions spoken aloud. "
                              "Each caption result is the JSON object `python -m captioner caption --json` prints.")
    app.state.service = service
    app.add_middleware(GuardMiddleware, max_body=max_body)

    @app.exception_handler(APIError)
    async def api_error(request, err: APIError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, err: RequestValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.get("/healthz", summary="Liveness and readiness (never waits on captioning)")
    async def healthz():
        state = "ready" if service.loaded else ("failed" if service.load_error else "loading")
        body = {"status": "ok", "model": service.model_name, "model_state": state, "queued": service.pending}
        if service.load_error:
            body["error"] = service.load_error
        return body

    @app.get("/v1/models", summary="The model folders this server can see, the default and the loaded one")
    async def models():
        from .model_folder import DEFAULT_MODEL_NAME, available_models, describe_model

        loaded = service.model_name if service.loaded else None
        found = await asyncio.to_thread(lambda: [(p.name, describe_model(p)) for p in available_models()])
        return {"loaded": loaded, "default": DEFAULT_MODEL_NAME,
                "models": [{"name": name, "description": text, "default": name == DEFAULT_MODEL_NAME,
                            "loaded": name == loaded} for name, text in found]}

    d = DecodeConfig()

    @app.post("/v1/captions", summary="Caption one or more images",
              description="Send images as multipart form files in the field `images` (one or more), or one "
                          "image as the raw body with an `image/*` Content-Type. The answer holds one result "
                          "per image, in order: the objects `caption --json` prints. In a request with several "
                          "images an unreadable one gets its own `{\"image\", \"error\"}`; a request with one "
                          "unreadable image is answered 422 with the same message.",
              openapi_extra={"requestBody": {"content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {"images": {
                      "type": "array", "items": {"type": "string", "format": "binary"}}}}},
                  "image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def captions(request: Request,
                       beam_width: int = Query(d.beam_width, description="1 = greedy"),
                       n_best: int = Query(d.n_best, description="captions per image (at most beam_width)"),
                       max_words: int = Query(d.max_words, ge=1, le=100),
                       length_alpha: float | None = Query(None, description="length normalisation exponent "
                                                                            "(default: the model's tuned value)"),
                       block_ngram: int = Query(d.block_ngram, description="never repeat an n-gram of this "
                                                                           "length; 0 = allow"),
                       allow_unk: bool = Query(False, description="let captions contain <unk>"),
                       read_text: str = Query(d.read_text, description="read the text in the picture: auto "
                                                                       "(when a quick look finds text), on, off")):
        settings = DecodeConfig(beam_width=beam_width, n_best=n_best, max_words=max_words,
                                length_alpha=d.length_alpha if length_alpha is None else length_alpha,
                                block_ngram=block_ngram, allow_unk=allow_unk, read_text=read_text)
        try:
            settings.validate()  # bad settings are answered before anything slow
        except ValueError as err:
            raise APIError(422, str(err)) from err
        images, names = await _read_images(request)
        captioner = await asyncio.to_thread(service.load)
        if length_alpha is None:
            settings.length_alpha = captioner.checkpoint.length_alpha
        results = await asyncio.wrap_future(service.submit(images, names, settings))
        if len(results) == 1 and not results[0].ok:
            raise APIError(422, results[0].error)
        return {"results": [result_record(name, r) for name, r in zip(names, results)]}

    @app.post("/v1/speech", summary="Speak a text (a caption) aloud", response_class=Response,
              responses={200: {"content": {"audio/mpeg": {}, "audio/wav": {}},
                               "description": "the audio; X-Speech-Engine says which voice was used"}})
    async def speech(body: SpeechRequest):
        if body.lang not in LANGUAGES:
            raise APIError(422, f"unknown language {body.lang!r} (choose from {', '.join(LANGUAGES)})")
        if body.engine not in ENGINES:
            raise APIError(422, f"unknown speech engine {body.engine!r} (choose from {', '.join(ENGINES)})")
        from .speech import speak  # looked up per call (tests replace it)

        try:
            spoken = await asyncio.to_thread(speak, body.text, body.lang, body.engine)
        except SpeechError as err:
            raise APIError(503, f"no voice could speak the text: {err}") from err
        headers = {"X-Speech-Engine": _header(spoken.engine)}
        if spoken.notes:
            headers["X-Speech-Notes"] = _header("; ".join(spoken.notes))
        return Response(spoken.audio, media_type=spoken.mime, headers=headers)

    return app


async def _read_images(request) -> tuple[list[bytes], list[str]]:
    """The request's images and their names: multipart files in ``images``, or a raw image/* body."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type.startswith("image/"):
        return [await request.body()], [request.query_params.get("name") or "image"]
    if content_type != "multipart/form-data":
        raise APIError(415, f"send images as multipart/form-data files in the field 'images', or one image as "
                            f"the body with an image/* Content-Type (not {content_type or 'no Content-Type'})")
    try:
        form = await request.form(max_files=MAX_IMAGES)
    except Exception as err:  # noqa: BLE001 - malformed multipart bodies of every kind
        if "too many files" in str(err).lower():
            raise APIError(413, f"too many images in one request (the limit is {MAX_IMAGES})") from err
        raise APIError(422, f"the multipart body could not be read ({' '.join(str(err).split())[:200]})") from err
    files = [f for f in form.getlist("images") if hasattr(f, "read")]
    if not files:
        raise APIError(422, "no images: send one or more files in the multipart field 'images'")
    if len(files) > MAX_IMAGES:
        raise APIError(413, f"too many images in one request (the limit is {MAX_IMAGES})")
    images, names = [], []
    for i, f in enumerate(files):
        images.append(await f.read())
        names.append(f.filename or f"image-{i + 1}")
    await form.close()
    return images, names


def _header(text: str) -> str:
    """HTTP header values are latin-1: keep them plain ASCII."""
    return text.encode("ascii", "replace").decode("ascii")


def _quiet_load(service: CaptionService) -> None:
    try:
        start = time.perf_counter()
        service.load()
        log.info("model %s loaded in %.1f s", service.model_name, time.perf_counter() - start)
    except APIError:
        pass  # recorded in service.load_error; /healthz and each request report it
    except Exception:  # noqa: BLE001
        log.exception("model failed to load")
        service.load_error = "the model failed to load (the server log has the details)"


def serve(host: str = "127.0.0.1", port: int = 8000, model: str | Path | None = None,
          weights: str | Path | None = None, max_batch: int = DEFAULT_MAX_BATCH, log_level: str = "info") -> None:
    """Run the API with uvicorn until interrupted (loopback only unless ``host`` says otherwise)."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    uvicorn.run(create_app(model, weights, max_batch=max_batch), host=host, port=port, log_level=log_level)
