"""Every failure is answered as ``{"error": message}``: expected ones (``APIError``), bad requests
(FastAPI's validation, 422) and HTTP errors (404, 405, ...)."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class APIError(Exception):
    """An expected failure: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def _api_error(request: Request, err: APIError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status)


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's list of problems as one line: "beam_width: Input should be a valid integer; ..."."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=422)


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every expected failure of ``app`` as ``{"error": message}``."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
