"""The API's request and response bodies as typed models: what the OpenAPI page (``/docs``) shows.

The caption record is not written again here: ``CaptionRecord`` is built from ``records.CaptionRecord``
(its fields, types, order and docs), so the schema always describes what ``batch.result_record`` returns.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from .. import records

MAX_SPEECH_CHARS = 1000


def _drop_default(schema: dict[str, Any]) -> None:
    """An optional record field has no default: it is either in the record or not (never a null stand-in)."""
    schema.pop("default", None)


def model_of_record(record: type, models: dict[type, type[BaseModel]] | None = None) -> type[BaseModel]:
    """A pydantic model with the fields, types, order and docs of the dataclass ``record``. Fields with a
    value are required; fields that default to ``records.ABSENT`` may be left out (serve it with
    ``response_model_exclude_unset`` so they are)."""
    models = {} if models is None else models
    if record in models:
        return models[record]
    hints = typing.get_type_hints(record)
    definitions: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        kind = _schema_type(hints[f.name], models)
        doc = f.metadata.get("doc")
        if f.default is records.ABSENT:
            definitions[f.name] = (kind, Field(None, description=doc, json_schema_extra=_drop_default))
        else:
            definitions[f.name] = (kind, Field(..., description=doc))
    model = create_model(record.__name__, __doc__=record.__doc__, __module__=__name__, **definitions)
    models[record] = model
    return model


def _schema_type(kind, models):
    """``kind`` with every dataclass in it (``list[Alternative]``) replaced by its model."""
    if dataclasses.is_dataclass(kind):
        return model_of_record(kind, models)
    if typing.get_origin(kind) is list:
        return list[_schema_type(typing.get_args(kind)[0], models)]
    return kind


_models: dict[type, type[BaseModel]] = {}
CaptionRecord = model_of_record(records.CaptionRecord, _models)
Alternative = _models[records.Alternative]


class CaptionResults(BaseModel):
    """The answer to ``POST /v1/captions``: one record per image, in the order they were sent."""

    results: list[CaptionRecord] = Field(..., description="one record per image, in order")  # type: ignore[valid-type]


class ErrorBody(BaseModel):
    """Every failure: a message that says what was wrong (never internals)."""

    error: str = Field(..., description="what went wrong, in one line")


class Health(BaseModel):
    """Liveness and readiness."""

    status: Literal["ok", "failed"] = Field(..., description="ok (answered 200), or failed when the model "
                                                              "could not load (answered 503)")
    model: str | None = Field(..., description="the model folder's name (null: the default, not loaded yet)")
    model_state: Literal["ready", "loading", "failed"] = Field(..., description="whether captions can be made now")
    queued: int = Field(..., description="caption requests waiting for the model")
    error: str | None = Field(None, description="only when the model failed to load: why",
                              json_schema_extra=_drop_default)


class ModelInfo(BaseModel):
    """One model folder."""

    name: str = Field(..., description="the folder's name")
    description: str = Field(..., description="one line about the model")
    default: bool = Field(..., description="true for the model used when none is named")
    loaded: bool = Field(..., description="true for the model this server captions with")


class LanguageModel(BaseModel):
    """The model that captions one language (``POST /v1/captions?lang=...``)."""

    lang: str = Field(..., description="ISO 639-1 code: en, de, zh, fr or es")
    name: str = Field(..., description="the language's name in English")
    model: str | None = Field(..., description="the model folder that captions it (null: none is installed)")
    default: bool = Field(..., description="true for the server's default language (serve --lang)")
    loaded: bool = Field(..., description="true while its model is loaded (others load on first use)")


class ModelList(BaseModel):
    """The model folders this server can see."""

    loaded: str | None = Field(..., description="the loaded model's name (null: not loaded yet)")
    default: str = Field(..., description="the default model's name")
    models: list[ModelInfo]
    languages: list[LanguageModel] = Field(default_factory=list, description="per caption language, its model")
    max_languages: int = Field(0, description="at most this many languages' models are loaded at once")


class SpeechRequest(BaseModel):
    """A text to speak."""

    text: str = Field(..., min_length=1, max_length=MAX_SPEECH_CHARS, description="what to say")
    lang: str = Field("en", description="the caption's language, which sets the voice: en, de, zh, fr or es")
    engine: str = Field("auto", description="auto (gTTS, else espeak-ng), gtts or espeak")


ERROR_MEANINGS = {400: "the Host header names another machine", 401: "the server's token is missing or wrong",
                  403: "a cross-origin request from a web page", 408: "the body did not arrive in time", 413: "the body or the number of images is over the limit", 415: "not an image type",
                  422: "an unreadable image or bad settings", 503: "the model or the voices are unavailable"}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each answered as an ``ErrorBody``: ``errors(413, 503)``."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}
