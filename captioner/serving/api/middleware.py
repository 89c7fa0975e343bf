"""The outermost layer of the API: the body-size limit and the plain JSON 500 for bugs."""
from __future__ import annotations

import json
import logging

log = logging.getLogger("captioner.api")

MAX_BODY_BYTES = 25 * 1024 * 1024  # like the app's server.maxUploadSize (25 MB)


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
    """Answer with a JSON body straight from the ASGI layer."""
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
