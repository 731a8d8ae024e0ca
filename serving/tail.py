"""Several server processes on one engine home: each follows what the others were told.

With ``recsys serve --workers N`` (or N servers started on the same home) a request reaches
one process, yet every process must answer alike. Two things travel between them, both
through files in the home, so no process needs to know the others:

Posted interactions
    Every process appends what it accepts to its own segment in ``store/incoming/``
    (:mod:`serving.segments`). :class:`PeerInteractions` follows every *other* server's
    segment from a byte offset, reads only complete new lines every ``tail_interval``
    seconds, checks them against the data contract and folds them into this process's
    live state (users erased on request excepted). Lines ingest blanked for an erasure
    (spaces of the same length) are skipped; a segment replaced or cut short is followed
    from its new end, and a read that lands inside a line skips to the next one.

    A process that starts (or is restarted) reads the existing segments once and keeps the
    lines whose event time is after the served model's ``data_end``: those cannot be in the
    model, so a restarted worker knows recent posts as well as its siblings do. Lines at or
    before ``data_end`` are taken to be in the model already and are not replayed (a post
    back-dated before ``data_end`` and not yet trained on is the one thing a restart misses;
    the next training run has it). A segment last written before ``data_end`` is not even
    read, so a start costs what was posted since the model's data, not every segment the
    home keeps. A model without ``data_end`` replays nothing.

Reloads
    ``POST /v1/admin/reload`` reloads the process it reached and then writes a reload
    request (``$RECSYS_HOME/serving/reload_request.json``, replaced atomically) naming the
    version it now serves. :class:`ReloadRequests` lets every process notice a request it
    has not handled yet and reload through its own :class:`~serving.state.ModelHolder`
    (the same atomic swap), unless it already serves that version. Each request is acted on
    once; a failed reload keeps the old model, and ``--reload-interval`` polling (when on)
    retries on its own.

:class:`ServedBy` names the answering process in an ``X-Served-By`` header, so an operator
can tell the workers apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys import appendlog
from recsys.contract import InteractionIn, latest_event_time, parse_timestamp
from recsys.durable import fsync_dir
from serving.config import ServingSettings
from serving.erasure import ErasedUsers
from serving.live import LiveInteractions
from serving.metrics import Metrics
from serving.segments import SEGMENT_NAME
from serving.state import LoadFailed, ModelHolder, ServedModel

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1 << 20
"""Most bytes read from a segment at once (a server's line is well under a kilobyte)."""
RELOAD_REQUEST = "reload_request.json"


# ---- posted interactions ----------------------------------------------------------------
@dataclass
class _Cursor:
    inode: int
    offset: int
    """Where reading resumes: a line start, unless the file changed under us (then the next one is found)."""


class SegmentTail:
    """Complete lines appended to the other servers' segments in ``directory`` since the last look."""

    def __init__(self, directory: Path, own: Path) -> None:
        self.directory = Path(directory)
        self.own = Path(own).name
        self._cursors: dict[str, _Cursor] = {}

    def read(self, handle: Callable[[bytes], None], unchanged_since: float = -math.inf) -> int:
        """Hand every new complete, non-blank line to ``handle`` (file by file, in order); returns how many.

        A segment seen for the first time and last written before ``unchanged_since`` (epoch
        seconds) is not read: following starts at its end.
        """
        try:
            entries = [e for e in os.scandir(self.directory) if SEGMENT_NAME.fullmatch(e.name) and e.name != self.own]
        except FileNotFoundError:  # nothing posted to any server yet
            return 0
        count = 0
        present = set()
        for entry in sorted(entries, key=lambda e: e.name):  # named by start time: oldest writer first
            present.add(entry.name)
            try:
                count += self._read_segment(Path(entry.path), handle, unchanged_since)
            except FileNotFoundError:  # removed between the listing and the read
                continue
        for gone in set(self._cursors) - present:
            del self._cursors[gone]
        return count

    def _read_segment(self, path: Path, handle: Callable[[bytes], None], unchanged_since: float) -> int:
        stat = os.stat(path)
        cursor = self._cursors.get(path.name)
        if cursor is None:
            skip = stat.st_mtime < unchanged_since
            cursor = self._cursors[path.name] = _Cursor(stat.st_ino, stat.st_size if skip else 0)
        elif cursor.inode != stat.st_ino or stat.st_size < cursor.offset:
            # Servers only append, and ingest blanks lines in place: the file was replaced by hand
            # (its lines were most likely seen already), or its writer cut a failed write back.
            log.warning("segment %s was replaced or cut short; following it from its current end", path)
            cursor.inode, cursor.offset = stat.st_ino, stat.st_size
            return 0
        if stat.st_size == cursor.offset:
            return 0
        with open(path, "rb") as fh:
            start = appendlog.next_line_start(fh, cursor.offset, stat.st_size)
            if start is None:
                return 0
            count, cursor.offset = _read_lines(fh, start, stat.st_size, handle)
        return count


def _read_lines(fh: BinaryIO, start: int, size: int, handle: Callable[[bytes], None]) -> tuple[int, int]:
    """Hand over the complete lines in ``[start, size)``; returns (lines handled, offset after the last)."""
    position, count = start, 0
    while position < size:
        read = appendlog.read_lines(fh, position, min(position + READ_CHUNK_BYTES, size))
        if read.end == position:
            if len(read.tail) < READ_CHUNK_BYTES:
                break  # a line still being written (or a dead writer's torn tail): not ours yet
            # no writer makes such a line; skip it rather than stall behind it
            log.warning("skipping a line longer than %d bytes in %s", READ_CHUNK_BYTES, fh.name)
            position += len(read.tail)
            continue
        for line in read.lines:
            if line.strip():  # a blank line is an erased user's line blanked by ingest
                handle(line)
                count += 1
        position = read.end
    return count, position


@dataclass(frozen=True)
class TailStats:
    """What one look at the other servers' segments did."""

    lines: int = 0
    applied: int = 0
    invalid: int = 0
    erased: int = 0
    trained: int = 0
    """Lines skipped on a first look because the model already holds them (at or before ``data_end``)."""
    future: int = 0
    """Lines dated further ahead of this machine's clock than the allowed skew (the POST route rejects
    them and ingest quarantines them: live state must not keep them either)."""


class PeerInteractions:
    """Folds interactions posted to the other servers of the home into this process's live state."""

    def __init__(self, tail: SegmentTail, live: LiveInteractions, erased: ErasedUsers,
                 current: Callable[[], ServedModel | None]) -> None:
        self.tail = tail
        self.live = live
        self.erased = erased
        self.current = current
        self.caught_up = False
        """Whether the existing segments were read once (after that, every new line counts)."""

    def poll(self) -> TailStats:
        """Apply what the other servers accepted since the last call (blocking file IO: run in a thread).

        Nothing is read while no model is served: the weights of actions come with the model,
        and the lines wait on disk until one is.
        """
        served = self.current()
        if served is None:
            return TailStats()
        after = -math.inf if self.caught_up else data_end_of(served)
        settings = served.bundle.settings
        latest = latest_event_time(settings.max_future_skew_days).timestamp()
        counts = {"lines": 0, "applied": 0, "invalid": 0, "erased": 0, "trained": 0, "future": 0}

        def handle(line: bytes) -> None:
            record = read_record(line)
            # On a first look most lines are old: their time alone settles them, at a third of
            # the cost of the full check.
            if record is not None and after > -math.inf and (event_time(record, settings.timezone) or 0) <= after:
                counts["trained"] += 1
                return
            row = checked_row(record, settings.timezone) if record is not None else None
            if row is None:
                counts["invalid"] += 1
            elif row.timestamp(settings.timezone).timestamp() > latest:
                # Written by a server that did not check the clock: a live event from the future
                # would outlive every reload (no data_end ever reaches it).
                counts["future"] += 1
            elif row.user_id in self.erased:
                counts["erased"] += 1
            else:
                self.live.add(row.user_id, row.item_id, settings.weight_of(row.action, row.value),
                              row.timestamp(settings.timezone).timestamp())
                if row.user_id in self.erased:  # erased while we added: what the erasure forgot comes back
                    self.live.forget(row.user_id)
                counts["applied"] += 1

        # A segment last written before data_end holds only lines the model was trained on (an
        # event after data_end posted before it would be a post from the future): not read at all,
        # so a start costs what was posted since the last training, not every segment ever kept.
        counts["lines"] = self.tail.read(handle, unchanged_since=after)
        if not self.caught_up:
            self.caught_up = True
            log.info("caught up with the other servers' posted interactions: %d applied, %d already in the model",
                     counts["applied"], counts["trained"])
        if counts["invalid"]:
            log.warning("skipped %d unreadable lines in the other servers' segments", counts["invalid"])
        if counts["future"]:
            log.warning("skipped %d lines dated after this machine's clock plus %g days in the other servers' "
                        "segments", counts["future"], settings.max_future_skew_days)
        return TailStats(**counts)


def parse_line(line: bytes, timezone: str) -> tuple[InteractionIn, float] | None:
    """A segment line checked against the data contract, with its event time (epoch seconds); None if invalid."""
    record = read_record(line)
    row = checked_row(record, timezone) if record is not None else None
    return (row, row.timestamp(timezone).timestamp()) if row is not None else None


def read_record(line: bytes) -> dict[str, Any] | None:
    """A segment line as a JSON object (None if it is not one)."""
    try:
        record = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    return record if isinstance(record, dict) else None


def checked_row(record: dict[str, Any], timezone: str) -> InteractionIn | None:
    """The record as a row of the data contract (None if it breaks it), as the POST route checks it.

    The item is not looked up in the catalog: the writing server did that with its own
    model, live state is kept by item id, and each request maps ids onto its catalog anyway.
    """
    try:
        row = InteractionIn.model_validate(record)
        row.timestamp(timezone)
    except (ValueError, ValidationError):  # ValueError: an unreadable time
        return None
    return row


def event_time(record: dict[str, Any], timezone: str) -> float | None:
    """The record's event time in epoch seconds (None if it has no readable one)."""
    moment = parse_timestamp(record.get("ts"), timezone)
    return moment.timestamp() if moment is not None else None


def data_end_of(served: ServedModel) -> float:
    """The served model's last training event (epoch seconds); +inf when unknown (replay nothing)."""
    data_end = served.data_end()
    if data_end is None:
        log.warning("version %s has no readable data_end: earlier posts to other servers are not replayed",
                    served.version)
        return math.inf
    return data_end


# ---- reloads ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReloadRequest:
    id: str
    version: str
    source: str
    requested_at: float
    """Epoch seconds."""
    pid: int


class ReloadRequests:
    """The home's latest reload request: written by the process an admin reached, read by all.

    ``source`` names what a process serves (registry model and alias, or bundle directory):
    a request made for another source (say, a challenger server on the same home) is ignored.
    Requests older than ``since`` (this process's start) are ignored too: its first load
    already got the model they asked for.
    """

    def __init__(self, path: Path, source: str, since: float | None = None) -> None:
        self.path = Path(path)
        self.source = source
        self.since = time.time() if since is None else since
        self._signature: tuple[int, int, int] | None = None
        self._handled: str | None = None

    @classmethod
    def of(cls, settings: ServingSettings, since: float | None = None) -> ReloadRequests:
        return cls(reload_request_path(settings), source_key(settings), since)

    def publish(self, version: str) -> ReloadRequest:
        """Ask every process to serve ``version`` (written atomically and durably)."""
        request = ReloadRequest(uuid.uuid4().hex, version, self.source, time.time(), os.getpid())
        record = {"id": request.id, "version": version, "source": self.source, "pid": request.pid,
                  "requested_at": datetime.fromtimestamp(request.requested_at, UTC).isoformat()}
        _write_atomically(self.path, json.dumps(record, ensure_ascii=False).encode("utf-8"))
        self._handled = request.id  # the publisher has done what it asks
        return request

    def pending(self) -> ReloadRequest | None:
        """The latest request if this process has not handled it yet (cheap: a ``stat`` when unchanged)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if signature == self._signature:
            return None
        request = _read_request(self.path)
        if request is None:  # unreadable: wait for the next request rather than guess
            self._signature = signature
            return None
        if request.id == self._handled or request.source != self.source or request.requested_at < self.since:
            self._signature = signature
            return None
        return request

    def handled(self, request: ReloadRequest) -> None:
        """Mark ``request`` done (whatever came of it): each request is acted on once."""
        self._handled = request.id
        self._signature = None  # the file is read once more, then compared by signature again


def reload_request_path(settings: ServingSettings) -> Path:
    return settings.engine_home().serving_cache.parent / RELOAD_REQUEST


def source_key(settings: ServingSettings) -> str:
    """What a server serves, as one string: requests for another source are not ours."""
    if settings.model_dir is not None:
        return f"directory:{Path(settings.model_dir).expanduser().resolve()}"
    return f"registry:{settings.model_name}@{settings.model_alias}"


def _read_request(path: Path) -> ReloadRequest | None:
    try:
        record = json.loads(path.read_bytes())
        return ReloadRequest(str(record["id"]), str(record["version"]), str(record["source"]),
                             datetime.fromisoformat(record["requested_at"]).timestamp(), int(record["pid"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("cannot read the reload request %s; ignoring it", path)
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a sibling file, fsync it and rename it over ``path``: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        with open(scratch, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(scratch, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    fsync_dir(path.parent)


# ---- the loops ------------------------------------------------------------------------------
class PeerFollower:
    """The background work of one process: follow the others' posts and reload requests."""

    def __init__(self, interactions: PeerInteractions, requests: ReloadRequests, holder: ModelHolder,
                 metrics: Metrics, interval: float) -> None:
        self.interactions = interactions
        self.requests = requests
        self.holder = holder
        self.metrics = metrics
        self.interval = interval
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Catch up with the posts already on disk, then follow both files in the background."""
        try:
            await anyio.to_thread.run_sync(self.interactions.poll)
        except Exception:  # the loop tries again; a server must start regardless
            log.exception("catching up with the other servers' posted interactions failed")
        self._tasks = [asyncio.create_task(self._follow_interactions(), name="tail-interactions"),
                       asyncio.create_task(self._follow_reloads(), name="follow-reloads")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _follow_interactions(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await anyio.to_thread.run_sync(self.interactions.poll)
            except Exception:  # an unreadable directory now need not be one later
                log.exception("following the other servers' posted interactions failed")

    async def _follow_reloads(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.follow_reload_once()
            except Exception:
                log.exception("following reload requests failed")

    async def follow_reload_once(self) -> bool:
        """Act on a pending reload request, if any; True if this process reloaded."""
        request = self.requests.pending()
        if request is None:
            return False
        self.requests.handled(request)
        current = self.holder.current
        if current is not None and current.version == request.version and current.degraded is None:
            return False
        log.info("reloading on request of process %d (version %s asked)", request.pid, request.version)
        try:
            await anyio.to_thread.run_sync(self.holder.reload)
        except LoadFailed:  # logged by the holder; the old model keeps serving
            self.metrics.reloads.labels("failed").inc()
            return False
        self.metrics.reloads.labels("ok").inc()
        return True


# ---- which process answered -------------------------------------------------------------
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
