"""Durable JSON-lines segments of posted interactions, for the next ``recsys ingest``.

Each server process owns one file, ``store/incoming/<server-start-utc>-<pid>.jsonl``, and is
its only writer; ingest reads complete lines from a remembered byte offset. The process holds
an exclusive ``flock`` on its segment for its whole life; the kernel drops it when the
process dies (SIGKILL included), which is how ingest tells a line still being written from
the torn tail of a dead writer. An accepted
batch is on disk (written, flushed, fsynced) before the API answers 202, and a batch is
written with one ``write`` under a lock so concurrent requests never interleave lines.
If a write fails halfway the file is cut back to the last whole batch, so a torn line can
never glue itself to the next one. The other server processes of the same home read the
file too (:mod:`serving.segment_tail`), to fold its lines into their own live state.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.durable import fsync_dir

log = logging.getLogger(__name__)

SEGMENT_NAME = re.compile(r"\d{8}T\d{6,12}Z-\d+\.jsonl")
"""Names :class:`SegmentWriter` gives its files (other files in ``incoming/`` are not a server's)."""


class SegmentWriter:
    def __init__(self, directory: Path, started: datetime | None = None, pid: int | None = None) -> None:
        started = (started or datetime.now(UTC)).astimezone(UTC)
        self.directory = Path(directory)
        self.path = self.directory / f"{started:%Y%m%dT%H%M%S%fZ}-{pid or os.getpid()}.jsonl"
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()

    def append(self, records: Iterable[Mapping[str, Any]], *, sync: bool = True) -> int:
        """Append one JSON line per record (durably: fsynced, unless ``sync`` is false, when
        :meth:`sync` does it later); returns the file size after the batch."""
        payload = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        data = payload.encode("utf-8")
        if not data:
            return self._size
        with self._lock:
            fd = self._open()
            try:
                written = 0
                while written < len(data):  # os.write may write less than asked
                    written += os.write(fd, data[written:])
                if sync:
                    os.fsync(fd)
            except OSError:
                self._cut_back(fd)
                raise
            self._size += len(data)
            return self._size

    def _open(self) -> int:
        if self._fd is None:
            missing = [d for d in (self.directory, *self.directory.parents) if not d.exists()]
            self.directory.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "a live writer owns this file"
            except OSError:
                log.warning("could not lock %s; a torn last line may wait for a later ingest", self.path)
            self._size = os.fstat(self._fd).st_size
            if not existed:  # the new names must survive a crash too, not only the bytes
                for directory in [self.directory, *(d.parent for d in missing)]:
                    fsync_dir(directory)
            log.info("appending posted interactions to %s", self.path)
        return self._fd

    def _cut_back(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self._size)
            os.fsync(fd)
        except OSError:
            log.exception("could not cut %s back to %d bytes after a failed write", self.path, self._size)

    def sync(self) -> None:
        """Make every line appended so far durable (raises OSError when the disk refuses)."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
