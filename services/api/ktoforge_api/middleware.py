"""ASGI middleware of the API: security headers on every response, and a size limit on request bodies.

Plain ASGI (not Starlette's BaseHTTPMiddleware), so that event streams pass through unbuffered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

EVERY_RESPONSE = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
API_CSP = "default-src 'none'; frame-ancestors 'none'"  # JSON and streams: nothing to load, never framed
# HTML pages (Swagger UI, ReDoc): assets from the API only; inline scripts allowed by hash, not wholesale.
# Both UIs set styles inline and ReDoc runs its search in a blob: worker.
PAGE_CSP = ("default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
            "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.S | re.I)
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def page_csp(html: bytes) -> str:
    """The CSP of one HTML page: its own inline scripts, by their sha256, are the only inline code allowed."""
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in INLINE_SCRIPT.findall(html)]
    return PAGE_CSP.format(hashes=" ".join(hashes)).replace("'self' ;", "'self';")


class SecurityHeaders:
    """nosniff, DENY framing and no referrer on every response; a CSP fitted to HTML pages or to the API.

    An HTML page is held until its body is complete, to hash its inline scripts into its CSP; one larger than
    ``MAX_HASHED_PAGE`` (an HTML artifact, say) is not held: it streams with a CSP that allows no inline script.
    """

    MAX_HASHED_PAGE = 1 << 20

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: list[Message] = []  # [start, body...] of an HTML page being held

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(EVERY_RESPONSE)
                if not headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = API_CSP
                    return await send(message)
                headers["Content-Security-Policy"] = page_csp(b"")  # no inline script, unless hashed below
                declared = headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.MAX_HASHED_PAGE:
                    return await send(message)
                held.append(message)
                return None
            if not held or message["type"] != "http.response.body":
                return await send(message)
            held.append(message)
            page = b"".join(m.get("body", b"") for m in held[1:])
            if not message.get("more_body"):
                MutableHeaders(scope=held[0])["Content-Security-Policy"] = page_csp(page)
                await send(held[0])
                return await send({"type": "http.response.body", "body": page})
            if len(page) > self.MAX_HASHED_PAGE:  # too large to hold: stream it, inline scripts stay refused
                await send(held[0])
                await send({"type": "http.response.body", "body": page, "more_body": True})
                held.clear()
            return None

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """413 for a request body over ``limit`` bytes, before any of it is parsed.

    Applies to every body but those of the upload routes under ``exempt``, which stream to disk under limits
    of their own (datasets: KTOFORGE_MAX_UPLOAD_MB; workers' artifacts and checkpoints:
    KTOFORGE_MAX_WORKER_UPLOAD_MB). A declared Content-Length over the limit is refused unread; a chunked body
    is counted as it arrives.
    """

    def __init__(self, app: App, limit: int, setting: str, exempt: tuple[str, ...]) -> None:
        self.app, self.limit, self.setting, self.exempt = app, limit, setting, exempt

    def _limited(self, scope: Scope) -> bool:
        return scope["type"] == "http" and scope["method"] in BODY_METHODS and not scope["path"].startswith(self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._limited(scope):
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnect notices, as the app expects
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        detail = (f"request body too large: the limit is {self.limit} bytes ({self.setting}); "
                  "large files go to POST /v1/datasets")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
