"""Right to erasure in the server: the erased users of a home, as every worker process sees them.

``DELETE /v1/users/{user_id}`` appends ``{"user_id", "erased_at"}`` to the store's
``tombstones.jsonl`` (one write, fsynced before the answer; the file's format and reading
rule are :mod:`recsys.appendlog`'s) through :class:`ErasedUsers`,
which also keeps the set of erased ids in memory. Every worker process follows the file on
its own (a ``stat`` at most every ``refresh_seconds``), so an erasure that reached one worker
reaches the others within that delay; each newly seen id is handed to ``on_erased`` (the
app drops its live interactions there).

The next ``recsys ingest`` removes the user's rows from the store files; the model being
served still holds what it learned from them until the next training run. Until then
:class:`serving.middleware.ErasedAsUnknown` makes the served model ignore the user: their recommendation
request is answered exactly as for an id no model knows (a named popularity fallback, no
history, no profile), with the caller's id in the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from recsys.appendlog import Shrunk, Tombstone, append_tombstone, read_tombstones

log = logging.getLogger(__name__)

ERASED_DETAIL = "this user was erased on request; nothing is kept for them"
"""What a write in an erased resident's name is told (409): the engine keeps nothing new for them."""
ERASED_RESPONSE = {409: {"description": "the user was erased on request", "content": {"application/json": {
    "example": {"detail": ERASED_DETAIL}}}}}
"""The 409 as the OpenAPI document states it, for every route that refuses writes for erased residents."""


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
