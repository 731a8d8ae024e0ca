"""Right to erasure in the server: tombstones, and serving an erased user as a stranger.

``DELETE /v1/users/{user_id}`` appends ``{"user_id", "erased_at"}`` to the store's
``tombstones.jsonl`` (one write, fsynced before the answer; the file's format and reading
rule are :mod:`recsys.appendlog`'s) through :class:`ErasedUsers`,
which also keeps the set of erased ids in memory. Every worker process follows the file on
its own (a ``stat`` at most every ``refresh_seconds``), so an erasure that reached one worker
reaches the others within that delay; each newly seen id is handed to ``on_erased`` (the
app drops its live interactions there).

The next ``recsys ingest`` removes the user's rows from the store files; the model being
served still holds what it learned from them until the next training run. Until then
:class:`ErasedAsUnknown` makes the served model ignore the user: their recommendation
request is answered exactly as for an id no model knows (a named popularity fallback, no
history, no profile), with the caller's id in the answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.appendlog import Shrunk, Tombstone, append_tombstone, read_tombstones

log = logging.getLogger(__name__)

PLACEHOLDER_ID = "\u0000erased-user"
"""The id an erased user's request is served under: no provider sends a NUL character."""
USERS_PREFIX = "/v1/users/"
RECOMMENDATIONS_SUFFIX = "/recommendations"


class ErasedUsers:
    """The erased user ids of one engine home, read from and appended to ``tombstones.jsonl``."""

    def __init__(self, path: Path, *, refresh_seconds: float = 1.0,
                 on_erased: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.refresh_seconds = refresh_seconds
        self.on_erased = on_erased
        self._erased_at: dict[str, str] = {}
        self._offset = 0
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._erased_at)

    def __contains__(self, user_id: object) -> bool:
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return user_id in self._erased_at

    def erased_at(self, user_id: str) -> str | None:
        return self._erased_at.get(user_id)

    def erase(self, user_id: str) -> tuple[str, bool]:
        """Record the erasure durably; returns (erased_at, whether it is new).

        Erasing an erased user again changes nothing and answers the first time.
        """
        with self._lock:
            self._refresh_locked()
            if user_id in self._erased_at:
                return self._erased_at[user_id], False
            erased_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            append_tombstone(self.path, Tombstone(user_id, erased_at))
            self._erased_at[user_id] = erased_at
        self._announce([user_id])
        return erased_at, True

    def refresh(self) -> list[str]:
        """Read tombstones appended since the last look (by any process); returns the new ids."""
        with self._lock:
            fresh = self._refresh_locked()
        self._announce(fresh)
        return fresh

    def _refresh_locked(self) -> list[str]:
        self._checked = time.monotonic()
        try:
            tombstones, self._offset = read_tombstones(self.path, self._offset)
        except Shrunk:  # replaced by an operator: read it again from the start
            tombstones, self._offset = read_tombstones(self.path)
        fresh = []
        for tombstone in tombstones:
            if tombstone.user_id not in self._erased_at:
                self._erased_at[tombstone.user_id] = tombstone.erased_at
                fresh.append(tombstone.user_id)
        return fresh

    def _announce(self, user_ids: list[str]) -> None:
        if self.on_erased is None:
            return
        for user_id in user_ids:
            self.on_erased(user_id)


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
