"""The outer layers of the API: who may call it (Host allow-list, same-origin POSTs, an optional bearer
token), then the body-size limit, the body-read timeout and the plain JSON 500 for bugs."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from urllib.parse import urlsplit

log = logging.getLogger("captioner.api")

MAX_BODY_BYTES = 25 * 1024 * 1024  # like the app's server.maxUploadSize (25 MB)
BODY_TIMEOUT_S = 30.0  # a client that stops sending its body for this long is dropped
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
OPEN_PATHS = ("/healthz",)  # answered without the token (liveness probes)


def host_name(value: str) -> str:
    """The name part of a Host header (no port, no IPv6 brackets, lower case): "[::1]:8000" -> "::1"."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        return value.split(":")[0]
    return value


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """True when ``name`` is one of ``allowed``: exact names, "*.example.org" for its subdomains, "*" for any."""
    for pattern in allowed:
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class AccessMiddleware:
    """Outermost layer, before any body is read.

    - Host: a request whose Host header is not an allowed name is answered 400 (a web page on another site
      can point its own name at 127.0.0.1, "DNS rebinding"; its requests then carry that name).
    - Origin: a state-changing request (POST, ...) that carries an ``Origin`` header other than this
      server's own (``scheme://Host``) is answered 403: a web page on another site cannot make a browser
      send captioning or speech work here, not even a "simple" multipart form POST. Clients that are not
      browsers send no Origin and are not affected.
    - Token: with ``token`` set, every path except /healthz needs ``Authorization: Bearer <token>`` (401)."""

    def __init__(self, app, allowed_hosts=LOOPBACK_HOSTS, token: str | None = None):
        self.app = app
        self.allowed = tuple(host_name(h) if h != "*" and not h.startswith("*.") else h.lower()
                             for h in allowed_hosts)
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host_name(host), self.allowed):
            log.warning("refused a request for host %r (allowed: %s)", host, ", ".join(self.allowed))
            return await _send_json(send, 400, {"error": f"host {host!r} is not allowed: this server answers to "
                                                         f"{', '.join(self.allowed)} (serve --allowed-host NAME "
                                                         f"adds one)"})
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method", "GET") not in SAFE_METHODS:
            if not _same_origin(origin.decode("latin-1"), host, scope.get("scheme", "http")):
                log.warning("refused a cross-origin %s from %r", scope.get("method"), origin)
                return await _send_json(send, 403, {"error": "cross-origin requests are refused: a web page on "
                                                             "another site cannot use this server"})
        if self.token is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                return await _send_json(send, 401, {"error": "this server needs its token: send the header "
                                                             "'Authorization: Bearer <token>'"},
                                        [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    """True when ``origin`` (an Origin header) is this server itself, as the request reached it."""
    parts = urlsplit(origin.strip().lower())
    return parts.scheme == scheme and bool(parts.netloc) and parts.netloc == host.strip().lower()


class GuardMiddleware:
    """Outermost layer: bodies over ``max_body`` answered 413 (by Content-Length, and while reading, before
    the app sees them), and any unexpected exception answered as a JSON 500 with no internals (the
    traceback is logged here, server-side). A client that sends part of its body and then nothing for
    ``body_timeout`` seconds is answered 408 and dropped (it would otherwise hold a connection forever)."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES, body_timeout: float = BODY_TIMEOUT_S):
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout

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
                    try:
                        message = await asyncio.wait_for(receive(), self.body_timeout)
                    except asyncio.TimeoutError:
                        log.warning("dropped a client that sent no body for %.0f s", self.body_timeout)
                        return await _send_json(send, 408, {"error": f"the request body did not arrive within "
                                                                     f"{self.body_timeout:g} s"})
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


async def _send_json(send, status: int, payload: dict, extra_headers: list | None = None) -> None:
    """Answer with a JSON body straight from the ASGI layer."""
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})
