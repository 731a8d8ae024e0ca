"""Served lists on record: one compact exposure line per list, durable before the list is answered.

Every list answer (user, region, similar) carries an opaque ``recommendation_id``; the same id
heads the exposure record this module appends to the process's own segment in
``store/exposures_incoming/`` (:class:`serving.segments.SegmentWriter`: one file per server
process, an exclusive ``flock`` for its life, a failed write cut back to the last whole
batch). ``recsys ingest`` folds the lines into ``store/exposures/date=YYYY-MM-DD/``
(:mod:`features.ingest.exposures`).

Group commit: a request hands its record to one writer thread and waits for it; the thread
writes everything that queued up while the previous ``fsync`` ran in one ``write`` and one
``fsync``. So an answered list is on disk (a SIGKILL right after the answer loses nothing),
while under load the fsync cost is shared by the whole batch instead of paid per request.
A record that cannot be written fails its request (503), as a posted interaction does: a
list the engine could not record is not served.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.segments import SegmentWriter

log = logging.getLogger(__name__)

WAIT_SECONDS = 30.0
"""Longest a thread-pool handler waits for its record to reach the disk before giving up."""


@dataclass(frozen=True)
class ListName:
    """The two fields naming a served list in its answer."""

    recommendation_id: str
    variant: str


def new_recommendation_id() -> str:
    """An opaque, unique list id (random: nothing about the user or the time can be read from it)."""
    return uuid.uuid4().hex


def exposure_record(*, recommendation_id: str, endpoint: str, model_version: str, variant: str,
                    item_ids: Sequence[str], first_position: int = 1, user_id: str | None = None,
                    region_code: str | None = None, target_item: str | None = None,
                    filters: Mapping[str, Any] | None = None, fallback: str | None = None) -> dict[str, Any]:
    """The exposure line of one served list.

    ``items`` are in list order; ``positions`` are their 1-based ranks in the whole list (a
    later page of a paged list starts after the earlier pages). ``filters`` keeps only the
    query values the caller set.
    """
    return {
        "recommendation_id": recommendation_id,
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "endpoint": endpoint, "user_id": user_id, "region_code": region_code, "target_item": target_item,
        "model_version": model_version, "variant": variant,
        "items": list(item_ids), "positions": list(range(first_position, first_position + len(item_ids))),
        "filters": {k: v for k, v in (filters or {}).items() if v not in (None, "", False)},
        "fallback": fallback,
    }


class ExposureLog:
    """The exposure segment of this server process, written by one group-committing thread."""

    def __init__(self, directory: Path, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.writer = SegmentWriter(directory)
        self._pending: list[tuple[Mapping[str, Any], Future[None]]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.batches = 0
        """Writes (each one ``fsync``) made so far: fewer than records under concurrent load."""
        self.records = 0

    @property
    def directory(self) -> Path:
        return self.writer.directory

    def submit(self, record: Mapping[str, Any]) -> Future[None]:
        """Queue one record; the future resolves once it is on disk (at once when logging is off)."""
        done: Future[None] = Future()
        if not self.enabled:
            done.set_result(None)
            return done
        with self._wake:
            if self._closing:
                done.set_exception(OSError("the exposure log is closed"))
                return done
            self._pending.append((record, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="exposure-log", daemon=True)
                self._thread.start()
            self._wake.notify()
        return done

    async def record(self, record: Mapping[str, Any]) -> None:
        """Append and wait for the disk without blocking the event loop (raises OSError on failure)."""
        if not self.enabled:
            return
        await asyncio.wrap_future(self.submit(record))

    def record_blocking(self, record: Mapping[str, Any]) -> None:
        """:meth:`record` for a handler running in the thread pool."""
        if self.enabled:
            self.submit(record).result(timeout=WAIT_SECONDS)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                batch, self._pending = self._pending, []
                if not batch and self._closing:
                    return
            self._write(batch)

    def _write(self, batch: list[tuple[Mapping[str, Any], Future[None]]]) -> None:
        try:
            self.writer.append(record for record, _ in batch)
        except OSError as exc:  # nothing of the batch is kept (the writer cut the file back)
            log.exception("could not record %d served lists", len(batch))
            for _, done in batch:
                done.set_exception(exc)
            return
        self.batches += 1
        self.records += len(batch)
        for _, done in batch:
            done.set_result(None)

    def close(self) -> None:
        """Write what is queued, stop the thread and close the segment. The log opens again on
        the next record: an app's lifespan may run more than once in one process."""
        with self._wake:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=WAIT_SECONDS)
        self.writer.close()
        with self._wake:
            self._closing, self._thread = False, None
