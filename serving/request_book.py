"""The server's view of residents' requests (点单): the stored table plus every posted line.

Requests are few (a resident asks now and then, unlike clicks), so each process keeps them
all in memory: the store's ``requests.parquet`` (what ingest accepted, files included) and
the complete lines of every process's segment in ``store/requests_incoming/`` (what was
posted since, by any worker), re-read when a file changed, at most every
``refresh_seconds``. A post is appended to this process's own segment
(:class:`serving.segments.SegmentWriter`, fsynced before the answer), the same crash-safe
format ingest reads for interactions.

Statuses are computed against the served catalogue (:func:`recsys.requests.status_of`), so
a request becomes ``matched`` as soon as a model whose catalogue holds an answering item is
served (after ingest and retraining, or a reload); answers are cached per model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from starlette.requests import Request as StarletteRequest

from recsys import appendlog
from recsys.catalog import Catalog
from recsys.contract import parse_timestamp
from recsys.home import EngineHome
from recsys.requests import REQUEST_COLUMNS, Answer, Request, district_centres, is_duplicate, status_of
from serving.segments import SegmentWriter

log = logging.getLogger(__name__)

_BOOK_LOCK = threading.Lock()
DEFAULT_TIMEZONE = "Asia/Shanghai"


@dataclass(frozen=True)
class Snapshot:
    """File sizes and modification times the book was read at (a change means: read again)."""

    marks: tuple[tuple[str, int, int], ...]


class RequestBook:
    """Every request of one engine home, as this process last read them."""

    def __init__(self, table: Path, lines: Path, *, timezone: str, refresh_seconds: float = 1.0) -> None:
        self.table = table
        self.lines = lines
        self.timezone = timezone
        self.refresh_seconds = refresh_seconds
        self.writer = SegmentWriter(lines)
        self._requests: dict[str, Request] = {}
        self._by_user: dict[str, list[Request]] = {}
        self._snapshot = Snapshot(())
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._answers: dict[tuple[int, str], Answer] = {}
        self._centres: tuple[int, dict[str, tuple[float, float]]] | None = None

    # ---- reading -------------------------------------------------------------------------
    def all(self) -> list[Request]:
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return list(self._requests.values())

    def of_user(self, user_id: str) -> list[Request]:
        """The user's requests, oldest first (an index lookup: list requests ask on every call)."""
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return list(self._by_user.get(user_id, ()))

    def of_region(self, region_code: str) -> list[Request]:
        return [r for r in self.all() if r.region_code == region_code]

    def refresh(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            snapshot = self._marks()
            if snapshot == self._snapshot:
                return
            found = {r.request_id: r for r in self._read_table()}
            for request in self._read_lines():
                found.setdefault(request.request_id, request)
            self._requests = found
            self._by_user = {}
            for request in sorted(found.values(), key=lambda r: r.ts):
                self._by_user.setdefault(request.user_id, []).append(request)
            self._snapshot = snapshot
            self._answers.clear()

    def _marks(self) -> Snapshot:
        files = [self.table, *(sorted(self.lines.glob("*.jsonl")) if self.lines.exists() else [])]
        marks = []
        for path in files:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            marks.append((path.name, stat.st_size, stat.st_mtime_ns))
        return Snapshot(tuple(marks))

    def _read_table(self) -> list[Request]:
        if not self.table.exists():
            return []
        try:
            rows = pl.read_parquet(self.table).to_dicts()
        except (OSError, pl.exceptions.PolarsError):
            log.exception("cannot read the stored requests at %s; serving the posted ones only", self.table)
            return []
        return [Request(**{c: row.get(c) for c in REQUEST_COLUMNS}) for row in rows]

    def _read_lines(self) -> Iterable[Request]:
        for segment in sorted(self.lines.glob("*.jsonl")) if self.lines.exists() else []:
            for line in appendlog.read_all_lines(segment).lines:
                record = appendlog.json_object(line) if line.strip() else None
                if record is not None:
                    request = self._from_record(record)
                    if request is not None:
                        yield request

    def _from_record(self, record: dict[str, Any]) -> Request | None:
        values = {c: record.get(c) for c in REQUEST_COLUMNS}
        for name in ("ts", "wanted_from", "wanted_until"):
            values[name] = parse_timestamp(values[name], self.timezone) if values[name] else None
        if values["ts"] is None or not values["request_id"] or not values["user_id"]:
            return None
        return Request(**values)

    # ---- writing -------------------------------------------------------------------------
    def add(self, request: Request) -> tuple[Request, bool]:
        """Record ``request`` durably unless the user asked for the same target within the window.

        Returns the request kept (the earlier one for a duplicate) and whether it is new.
        """
        earlier = self.of_user(request.user_id)
        with self._lock:
            duplicate = is_duplicate(request, earlier)
            if duplicate is not None:
                return duplicate, False
            self.writer.append([record_of(request)])
            self._requests[request.request_id] = request
            self._by_user.setdefault(request.user_id, []).append(request)
            self._answers.clear()
        return request, True

    def close(self) -> None:
        self.writer.close()

    # ---- answering -----------------------------------------------------------------------
    def answer(self, request: Request, catalog: Catalog, now: datetime | None = None) -> Answer:
        """The request's status against ``catalog`` (cached per catalogue and request)."""
        key = (id(catalog), request.request_id)
        cached = self._answers.get(key)
        if cached is not None and cached.status == "matched":
            return cached
        answer = status_of(request, catalog, self._centres_of(catalog), now or datetime.now(UTC))
        self._answers[key] = answer
        return answer

    def _centres_of(self, catalog: Catalog) -> dict[str, tuple[float, float]]:
        if self._centres is None or self._centres[0] != id(catalog):
            self._centres = (id(catalog), district_centres(catalog))
        return self._centres[1]


def book_of(request: StarletteRequest) -> RequestBook:
    """The app's request book, made on first use (one per app: its own segment file)."""
    state = request.app.state
    book: RequestBook | None = getattr(state, "request_book", None)
    if book is None:
        with _BOOK_LOCK:
            book = getattr(state, "request_book", None)
            if book is None:
                svc = state.services
                current = svc.holder.current
                timezone = current.bundle.settings.timezone if current is not None else DEFAULT_TIMEZONE
                home: EngineHome = svc.settings.engine_home()
                book = RequestBook(home.requests, home.request_lines, timezone=timezone)
                state.request_book = book
    return book


def record_of(request: Request) -> dict[str, Any]:
    """A request as one JSON line of a segment (times ISO-8601 UTC)."""
    record: dict[str, Any] = {}
    for name in REQUEST_COLUMNS:
        value = getattr(request, name)
        record[name] = value.isoformat() if isinstance(value, datetime) else value
    return record


def new_request_id() -> str:
    """An id for a posted request: unique per post (time, process, randomness)."""
    return f"rq{time.time_ns():x}{os.getpid():x}{os.urandom(4).hex()}"
