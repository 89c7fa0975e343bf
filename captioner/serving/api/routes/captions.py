"""``POST /v1/captions``: images in, one caption record per image out (``records.CaptionRecord``)."""
from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, Query, Request

from ....config import DecodeConfig
from ...batch import result_record
from ...languages import language
from ..deps import Service
from ..errors import APIError
from ..schemas import CaptionResults, errors

MAX_IMAGES = 32  # images per request

router = APIRouter(prefix="/v1", tags=["captions"])

_d = DecodeConfig()  # the defaults the query parameters show

DESCRIPTION = ("Send images as multipart form files in the field `images` (one or more), or one image as the raw "
               "body with an `image/*` Content-Type (named by the `name` query parameter). The answer holds one "
               "record per image, in order: the objects `python -m captioner caption --json` prints. In a "
               "request with several images an unreadable one gets its own `{\"image\", \"error\"}`; a request "
               "with one unreadable image is answered 422 with the same message.")
REQUEST_BODY = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"images": {
        "type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/captions", response_model=CaptionResults, response_model_exclude_unset=True,
             summary="Caption one or more images", description=DESCRIPTION, openapi_extra=REQUEST_BODY,
             responses=errors(413, 415, 422, 503))
async def captions(request: Request, service: Service,
                   beam_width: int = Query(_d.beam_width, description="1 = greedy"),
                   n_best: int = Query(_d.n_best, description="captions per image (at most beam_width)"),
                   max_words: int = Query(_d.max_words, ge=1, le=100),
                   length_alpha: float | None = Query(None, description="length normalisation exponent "
                                                                        "(default: the model's tuned value)"),
                   block_ngram: int = Query(_d.block_ngram, description="never repeat one of the caption's own "
                                                                        "n-grams of this length (at least 2); "
                                                                        "0 = allow"),
                   allow_unk: bool = Query(False, description="let captions contain <unk>"),
                   wording: str = Query(_d.wording, description="neutral: person words without gender (a person, "
                                                                "a child, their); as-learned: the model's own words"),
                   read_text: str = Query(_d.read_text, description="read the text in the picture: auto (when a "
                                                                    "quick look finds text), on, off"),
                   rerank: str = Query(_d.rerank, description="order the beam's captions by the decoder's score, "
                                                              "or by consensus with what people said about the most "
                                                              "similar training photos; auto: the model's choice"),
                   lang: str | None = Query(None, description="caption language: en, de, zh, fr or es (default: "
                                                              "the server's, set by `serve --lang`)")) -> dict:
    """The records of the request's images (``batch.result_record``: exactly what ``caption --json`` prints)."""
    settings = DecodeConfig(beam_width=beam_width, n_best=n_best, max_words=max_words,
                            length_alpha=_d.length_alpha if length_alpha is None else length_alpha,
                            block_ngram=block_ngram, allow_unk=allow_unk, wording=wording,
                            read_text=read_text, rerank=rerank)
    try:
        if length_alpha is not None and not math.isfinite(length_alpha):
            raise ValueError(f"length_alpha must be a finite number, not {length_alpha}")
        settings.validate()  # bad settings are answered before anything slow
        code = language(lang).code if lang is not None else None
    except ValueError as err:
        raise APIError(422, str(err)) from err
    images, names = await _read_images(request)
    captioner = await request.app.state.work_pool.run(service.load, code)  # not the pool speech uses
    if length_alpha is None:
        settings.length_alpha = captioner.checkpoint.length_alpha
    if settings.rerank == "consensus":  # asked of a model folder without its neighbour index: say how to fit it
        try:
            captioner.reranking(settings)
        except ValueError as err:
            raise APIError(422, str(err)) from err
    results = await asyncio.wrap_future(service.submit(images, names, settings, code))
    if len(results) == 1 and not results[0].ok:
        raise APIError(422, results[0].error)
    return {"results": [result_record(name, r) for name, r in zip(names, results)]}


async def _read_images(request: Request) -> tuple[list[bytes], list[str]]:
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
