"""The app's middleware stack: the small ASGI middlewares, and :func:`install`, which orders every one.

Every request passes, outermost first (the order :func:`install` registers them in, and why):

1. :class:`ServedBy`: ``X-Served-By: <pid>`` on every answer, refusals included, so an
   operator can tell the worker processes apart;
2. metrics (:class:`serving.metrics.MetricsMiddleware`): outside everything that can refuse,
   so every answer is timed and counted, refusals and 413s included;
3. Starlette's ``CORSMiddleware``, only with an allow-list (``cors_origins``): outside the
   guard, so a browser's preflight (which never carries the key) is answered without one,
   and a refusal (429 with ``Retry-After``, 401) still carries the CORS headers a web app
   needs to read it; a request from an origin not on the list gets no CORS header, and its
   browser keeps the answer from the page;
4. :class:`serving.guard.Guard` (load shedding, API key, rate limits): before a byte of the
   body is read or a route is matched, so a refused request costs next to nothing;
5. :class:`ImplicitMethods`: ``HEAD`` and ``OPTIONS`` for every route, inside the guard so a
   ``HEAD`` passes every check its ``GET`` would;
6. :class:`BodySizeLimit`: the body-size cap, inside metrics so its 413s are counted, and
   around everything that reads a body;
7. :class:`ErasedAsUnknown`: next to the router, so the recommendations route of
   an erased user is rewritten after every check and the outer layers (metrics) see the
   route the router matched;
8. :class:`serving.list_failures.ListFailures`: innermost, so it sees which route a
   failed request matched (refusals of the guard never reach it) and the handler's own
   exception before the app turns it into a 500.

Routes then check the key's scope (:class:`~serving.deps.RequireScope`). All of them are
pure ASGI (no per-request task, no body buffering except where an answer is rewritten).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import API_KEY_HEADER
from serving.erasure import ErasedUsers
from serving.guard import Guard
from serving.list_failures import ListFailures
from serving.metrics import Metrics, MetricsMiddleware
from serving.refusals import send_json

log = logging.getLogger(__name__)

CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = (API_KEY_HEADER, "Content-Type")
CORS_EXPOSED = ("Retry-After", "X-Served-By")
"""Answer headers a web page may read (the wait after a 429, which worker answered)."""
PLACEHOLDER_ID = "\u0000erased-user"
"""The id an erased user's request is served under: no provider sends a NUL character."""
USERS_PREFIX = "/v1/users/"
RECOMMENDATIONS_SUFFIX = "/recommendations"


def install(app: FastAPI, *, erased: ErasedUsers, max_body_bytes: int, routes: Callable[[], Sequence[BaseRoute]],
            guard: dict[str, Any], metrics: Metrics, cors_origins: Sequence[str] = ()) -> None:
    """Register the whole stack in the order of the module docstring.

    Starlette wraps each middleware added around the ones added before it, so they are
    added innermost first.
    """
    app.add_middleware(ListFailures)
    app.add_middleware(ErasedAsUnknown, erased=erased)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(ImplicitMethods, routes=routes)
    app.add_middleware(Guard, **guard)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=list(CORS_METHODS),
                           allow_headers=list(CORS_HEADERS), expose_headers=list(CORS_EXPOSED), max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(ServedBy)


# ---- which process answered -----------------------------------------------------------------
class ServedBy:
    """Pure ASGI middleware adding ``X-Served-By: <pid>`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (b"x-served-by", str(os.getpid()).encode("ascii"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


# ---- HEAD and OPTIONS -------------------------------------------------------------------------
# FastAPI answers both with 405 on its own. ``HEAD`` is served as the ``GET`` of the same URL
# (same checks, same status and headers, ``Content-Length`` included) without the body;
# ``OPTIONS`` answers 204 with an ``Allow`` header listing the methods of every route the path
# matches (a path no route matches goes on to the router: a JSON 404). Neither needs a key of
# its own: ``HEAD`` passes every check its ``GET`` would, and ``OPTIONS`` says nothing about
# any resident.
IMPLIED = ("HEAD", "OPTIONS")
ROUTE_FIELD = "route"
"""Where the router leaves the matched route (read by the metrics middleware outside)."""


class ImplicitMethods:
    """Pure ASGI middleware answering ``OPTIONS`` and serving ``HEAD`` as a body-less ``GET``."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method") if scope["type"] == "http" else None
        if method == "HEAD":
            await self._head(scope, receive, send)
        elif method == "OPTIONS" and (allowed := self.allowed(scope)):
            await send({"type": "http.response.start", "status": 204,
                        "headers": [(b"allow", ", ".join(allowed).encode()), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
        else:
            await self.app(scope, receive, send)

    def allowed(self, scope: Scope) -> list[str]:
        """The methods of every route matching the path (HEAD with GET, OPTIONS always); [] if none."""
        methods: set[str] = set()
        for route in self.routes():
            match, _ = route.matches({**scope, "method": "GET"})
            if match is not Match.NONE:
                methods |= set(getattr(route, "methods", None) or ())
        if not methods:
            return []
        if "GET" in methods:
            methods.add("HEAD")
        methods.add("OPTIONS")
        return sorted(methods)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A copy: the server still sees HEAD in its own scope (uvicorn then writes no body either).
        inner = {**scope, "method": "GET"}

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(inner, receive, without_body)
        finally:
            if ROUTE_FIELD in inner:
                scope[ROUTE_FIELD] = inner[ROUTE_FIELD]


# ---- the body-size cap ------------------------------------------------------------------------
# A declared ``Content-Length`` over the cap is refused at once, and a body sent without one
# (chunked) is counted as it streams in and refused as soon as it passes the cap. Either way
# the client gets 413 with a JSON ``{"detail": ...}`` (:mod:`serving.openapi` documents it).
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


# ---- erased users served as strangers ---------------------------------------------------------
class ErasedAsUnknown:
    """Pure ASGI middleware serving an erased user's recommendations as for an unknown id.

    The request is routed under :data:`PLACEHOLDER_ID` (so no model row, live interaction
    or profile of the user is used) and the answer's ``user_id`` is put back.
    """

    def __init__(self, app: ASGIApp, erased: ErasedUsers) -> None:
        self.app = app
        self.erased = erased

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user_id = _recommendations_user(scope)
        if user_id is None or user_id not in self.erased:
            await self.app(scope, receive, send)
            return
        # In place, so the outer middlewares (metrics) see the route the router matched.
        scope["path"] = USERS_PREFIX + PLACEHOLDER_ID + RECOMMENDATIONS_SUFFIX
        scope["raw_path"] = quote(scope["path"]).encode("ascii")
        await self.app(scope, receive, _RestoredId(send, user_id))


def _recommendations_user(scope: Scope) -> str | None:
    """The user id of a ``GET /v1/users/{user_id}/recommendations`` request (None for any other)."""
    if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
        return None
    path: str = scope.get("path", "")
    if not (path.startswith(USERS_PREFIX) and path.endswith(RECOMMENDATIONS_SUFFIX)):
        return None
    user_id = path[len(USERS_PREFIX):len(path) - len(RECOMMENDATIONS_SUFFIX)]
    return user_id or None


class _RestoredId:
    """A ``send`` that buffers a JSON answer and writes the caller's id back into it."""

    def __init__(self, send: Send, user_id: str) -> None:
        self.send = send
        self.user_id = user_id
        self.start: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body", False):
            return
        body = self._restored(bytes(self.body))
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    def _restored(self, body: bytes) -> bytes:
        try:
            document = json.loads(body)
        except ValueError:
            return body
        if isinstance(document, dict) and document.get("user_id") == PLACEHOLDER_ID:
            document["user_id"] = self.user_id
            return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        return body
