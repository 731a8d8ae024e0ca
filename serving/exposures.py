"""Served lists on record: one compact exposure line per list, written before the list is answered.

Every list answer (user, region, similar) carries an opaque ``recommendation_id``; the same id
heads the exposure record this module appends to the process's own segment in
``store/exposures_incoming/`` (:class:`serving.segments.SegmentWriter`: one file per server
process, an exclusive ``flock`` for its life, a failed write cut back to the last whole
batch). ``recsys ingest`` folds the lines into ``store/exposures/date=YYYY-MM-DD/``
(:mod:`features.ingest.exposures`).

Written before the answer, synced just after: a request appends its record to the segment
itself (one small ``write`` under a lock) before its list is answered, so a crash of the
server process (SIGKILL included) loses no answered list: the bytes are in the kernel's page
cache. One flusher thread ``fsync``s the segment at most :data:`SYNC_SECONDS` after a write,
so a power loss or kernel crash can lose the records of that last moment. That is a chosen
trade: exposure records measure the engine, while posted interactions (a resident's own
action) are fsynced before their answer. Waiting for an ``fsync`` on every list cost 15% of
the API's throughput in ``experiments/bench_serve.py --compare exposures``; this costs
about the JSON encoding of one line. A record that cannot be written fails its request
(503), as a posted interaction does: a list the engine could not record is not served.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.segments import SegmentWriter

log = logging.getLogger(__name__)

WAIT_SECONDS = 30.0
"""Longest :meth:`ExposureLog.close` waits for the flusher's last sync."""
SYNC_SECONDS = 0.2
"""At most this long after a list is answered, its record is fsynced."""


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
    """The exposure segment of this server process: written by each request, synced by one thread."""

    def __init__(self, directory: Path, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.writer = SegmentWriter(directory)
        self._wake = threading.Condition()
        self._dirty = False
        self._thread: threading.Thread | None = None
        self._closing = False
        self.batches = 0
        """``fsync`` calls made so far: fewer than records under load (one per :data:`SYNC_SECONDS`)."""
        self.records = 0

    @property
    def directory(self) -> Path:
        return self.writer.directory

    async def record(self, record: Mapping[str, Any]) -> None:
        """Append before the answer (raises OSError on failure); the flusher syncs it soon after."""
        self.record_blocking(record)

    def record_blocking(self, record: Mapping[str, Any]) -> None:
        """:meth:`record`, callable from any thread (the write is one short append under a lock)."""
        if not self.enabled:
            return
        self.writer.append((record,), sync=False)  # the writer cuts a failed write back
        with self._wake:
            self.records += 1
            self._dirty = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="exposure-sync", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._dirty and not self._closing:
                    self._wake.wait()
                if not self._dirty and self._closing:
                    return
                self._dirty = False
            self._sync()
            time.sleep(SYNC_SECONDS)  # writes of the next moment share the next fsync

    def _sync(self) -> None:
        try:
            self.writer.sync()
        except OSError:
            log.exception("could not sync the exposure segment %s", self.writer.path)
            return
        self.batches += 1

    def close(self) -> None:
        """Sync what is written, stop the thread and close the segment. The log opens again on
        the next record: an app's lifespan may run more than once in one process."""
        with self._wake:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=WAIT_SECONDS)
        self._sync()
        self.writer.close()
        with self._wake:
            self._closing, self._thread = False, None
