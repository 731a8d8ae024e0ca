"""Input limits of the API and the shape of its error answers.

:class:`BodySizeLimit` caps the size of a request body before anything parses it: a declared
``Content-Length`` over the cap is refused at once, and a body sent without one (chunked)
is counted as it streams in and refused as soon as it passes the cap. Either way the
client gets ``413`` with a JSON ``{"detail": ...}``, like every other error of the API.

:func:`document_errors` makes the OpenAPI schema tell the truth about those errors: the
app answers ``422`` with ``{"detail": "<message>", "errors": [...]}`` (not FastAPI's
default list), ``400``/``413`` where a body is accepted, and ``503`` on the ``/v1`` routes
(no model loaded yet, or the store cannot be written).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

ERROR_SCHEMA = "ErrorBody"
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


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": payload})


# --------------------------------------------------------------------------- the documented errors

_ERROR_BODY = {
    "title": ERROR_SCHEMA,
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "what is wrong, in one sentence"},
        "errors": {
            "type": "array",
            "description": "validation errors: where (loc), what (msg) and its kind (type)",
            "items": {"type": "object", "properties": {
                "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
            }},
        },
    },
}
_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}


def document_errors(app: FastAPI) -> None:
    """Wrap ``app.openapi`` so the schema documents the error bodies the app really sends."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI caches it (and rebuilds it when routes change)
        _patch(schema)  # idempotent, so patching the cached copy again is harmless
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _patch(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_SCHEMA] = _ERROR_BODY
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    _use_error_body(response)
            if "422" in responses:
                responses["422"]["description"] = "invalid input"
            if "requestBody" in operation:
                responses.setdefault("400", _error_response("the body is not readable (e.g. nested too deep)"))
                responses.setdefault("413", _error_response("request body over the size limit"))
            if path.startswith("/v1/"):
                responses.setdefault("503", _error_response(
                    "temporarily unavailable: no model loaded yet, or the store cannot be written"))


def _use_error_body(response: dict[str, Any]) -> None:
    """Point an error response at :data:`ERROR_SCHEMA` unless it already names its own model."""
    content = response.setdefault("content", {}).setdefault("application/json", {})
    current = content.get("schema")
    if current is None or current.get("$ref", "").endswith("/HTTPValidationError"):
        content["schema"] = _REF


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _REF}}}
