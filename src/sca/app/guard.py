"""The server's front gate, as pure ASGI middleware: every request gets an id; the Host it names, its API key and its
Origin are checked; a JSON body is counted while it streams and refused past its limit before anything parses it;
a fault of ours becomes a 500 that names the request id and nothing else.

Pure ASGI, not Starlette's `BaseHTTPMiddleware` (`@app.middleware("http")`): behind that, a route's
`request.is_disconnected()` did not see a client gone for 8 s and more, so abandoned work went on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from starlette.datastructures import Headers

from ..options import ServerLimits

log = logging.getLogger("sca.serve")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
UPLOAD_TYPES = ("application/octet-stream", "image/", "video/")
"""Bodies the upload routes read themselves, counted against `max_upload_bytes` while they stream."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class Security:
    """api_key: required on /api/* when set. allowed_origins: web origins (besides the server's own) whose pages may
    change state here ("*": any). allowed_hosts: the names and addresses the server answers to, in the Host header
    ("*": any; a DNS-rebinding page names its own host and is refused)."""

    api_key: str | None = None
    allowed_origins: Sequence[str] = field(default_factory=tuple)
    allowed_hosts: Sequence[str] = ("*",)


class ClientError(Exception):
    """A request the server refuses: its status and the message the client sees."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class Guard:
    """The ASGI middleware around the application (see the module's docstring)."""

    def __init__(self, app, security: Security, limits: ServerLimits):
        self.app, self.security, self.limits = app, security, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["id"] = request_id
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        headers = Headers(scope=scope)
        try:
            check_host(headers, self.security)
            if scope["path"].startswith("/api/"):
                check_api_key(headers, self.security)
            if scope["method"] not in SAFE_METHODS:
                check_origin(headers, scope, self.security)
                if not headers.get("content-type", "").lower().startswith(UPLOAD_TYPES):
                    receive = await self._bounded_body(headers, receive)
        except ClientError as error:
            return await error_response(send_with_id, request_id, error.status, str(error), error.headers)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # a fault of ours: logged with its traceback, the client gets the request id
            log.exception("request %s (%s %s) failed", request_id, scope["method"], scope["path"])
            if not started:
                await error_response(send_with_id, request_id, 500,
                                     f"the server failed on this request (request id {request_id})")

    async def _bounded_body(self, headers: Headers, receive):
        """The whole body, read within `max_json_bytes` (a lying or missing Content-Length changes nothing) and
        `upload_stall_seconds` a piece, then handed on as one message; later messages (a disconnect) pass through."""
        limit, stall = self.limits.max_json_bytes, self.limits.upload_stall_seconds
        too_large = ClientError(413, f"the request body is over {limit / 1e6:g} MB, the server's limit "
                                     "(max_json_bytes): send fewer regions per request")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large

        async def pieces():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientError(499, "the client went away")
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        body, delivered = await read_bounded(pieces(), limit, stall, too_large, "the request body"), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


async def read_bounded(pieces: AsyncIterator[bytes], limit: int, stall: float, too_large: ClientError,
                       what: str) -> bytes:
    """A body's pieces joined, counted as they come (whatever Content-Length says): `too_large` past `limit` bytes,
    408 when a piece takes longer than `stall` seconds to come."""
    chunks, size, stream = [], 0, pieces.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=stall)
        except StopAsyncIteration:
            return b"".join(chunks)
        except TimeoutError:
            raise ClientError(408, f"{what} stalled for {stall:g} s") from None
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)


async def error_response(send, request_id: str, status: int, message: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": message, "request_id": request_id}).encode()
    extra = [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


def host_name(host: str) -> str:
    """`name:port`, `[v6]:port` or `name` → the name, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_host(headers: Headers, security: Security) -> None:
    """The Host header must name the server (DNS rebinding: a hostile page's name that resolves to this machine)."""
    if "*" in security.allowed_hosts:
        return
    name = host_name(headers.get("host", ""))
    if name not in {host_name(h) for h in security.allowed_hosts}:
        raise ClientError(421, f"this server does not answer to the host {name[:100]!r}: start it with --allow-host "
                               "NAME to allow it")


def check_api_key(headers: Headers, security: Security) -> None:
    if security.api_key is None:
        return
    given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not secrets.compare_digest(given.encode(), security.api_key.encode()):
        raise ClientError(401, "this server needs an API key: send it as X-API-Key or Authorization: Bearer KEY")


def check_origin(headers: Headers, scope, security: Security) -> None:
    """Browsers send Origin with cross-site POSTs: only the server's own origin and allowed ones may change state."""
    origin = headers.get("origin")
    if origin is None:
        return  # not a browser's cross-site request (curl, scripts)
    own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
    if origin != own and origin not in security.allowed_origins and "*" not in security.allowed_origins:
        raise ClientError(403, f"requests from {origin[:200]} are not allowed: start the server with --allow-origin "
                               f"{origin[:200]}")
