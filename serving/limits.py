"""Input limits of the API and the shape of its error answers.

:class:`BodySizeLimit` caps the size of a request body before anything parses it: a declared
``Content-Length`` over the cap is refused at once, and a body sent without one (chunked)
is counted as it streams in and refused as soon as it passes the cap. Either way the
client gets ``413`` with a JSON ``{"detail": ...}``, like every other error of the API.
(:mod:`serving.openapi` documents it.)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_CONTENT_TOO_LARGE = 413


class BodyTooLarge(HTTPException):
    """The request body passed the cap while it was being read.

    An ``HTTPException`` so that FastAPI's body parsing passes it on unchanged instead of
    turning it into a generic 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(_CONTENT_TOO_LARGE, detail=too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes"


class BodySizeLimit:
    """Pure ASGI middleware refusing request bodies over ``max_bytes`` with a JSON 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            # Refused before reading a byte of it; the server closes the connection afterwards.
            await send_json(send, _CONTENT_TOO_LARGE, {"detail": too_large_message(self.max_bytes)})
            return
        await _LimitedRequest(self.app, self.max_bytes, scope, receive, send).run()


class _LimitedRequest:
    """One request whose body is counted as the app reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.scope, self.receive, self.send = scope, receive, send
        self.received = 0
        self.overflowed = False
        self.app_started = False
        """The app began its own answer before the body overflowed (then it is let through)."""
        self.answered = False

    async def run(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        except BodyTooLarge:
            if self.app_started:
                raise
            await self._answer_too_large()

    async def _receive(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                self.overflowed = True
                raise BodyTooLarge(self.max_bytes)
        return message

    async def _send(self, message: Message) -> None:
        if self.overflowed and not self.app_started:
            # Whatever the app made of the interrupted body (a 400 from a parser that caught the
            # error, say), the client is told the real reason, once; the app's answer is dropped.
            await self._answer_too_large()
            return
        if message["type"] == "http.response.start":
            self.app_started = True
        await self.send(message)

    async def _answer_too_large(self) -> None:
        if self.answered:
            return
        self.answered = True
        await send_json(self.send, _CONTENT_TOO_LARGE, {"detail": too_large_message(self.max_bytes)})


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None when absent or unreadable (the server rejects those)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_json(send: Send, status: int, body: dict[str, Any], *, close: bool = True,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with a JSON body from ASGI middleware (``close``: tell the client the connection ends)."""
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            *(headers or [])]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})
