"""``HEAD`` and ``OPTIONS`` for every route (FastAPI answers both with 405 on its own).

- ``HEAD`` is served as the ``GET`` of the same URL (same checks, same status and headers,
  ``Content-Length`` included) without the body.
- ``OPTIONS`` answers ``204`` with an ``Allow`` header listing the methods of every route the
  path matches; a path no route matches goes on to the router (a JSON 404).

Neither needs a key of its own: ``HEAD`` passes every check its ``GET`` would, and ``OPTIONS``
says nothing about any resident.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
