"""The API's interaction segments in ``store/incoming/``: whose they are, and when they may go.

Each server process appends what it accepts to its own segment and holds an exclusive
``flock`` on it for its whole life (``serving.segments``). Ingest reads every segment from
the byte offset its log says was committed. Without a retention rule the folder would grow
by one file per server start, forever; :func:`prune_consumed` removes a segment once all
of the following hold, under the store's writer lock:

* it is named like a server's segment (other files are some tool's, and never touched);
* its writer is gone (:func:`abandoned`): nobody can append to it any more;
* every byte of it is committed to the store (the ingest log's offset equals its size);
* it was last written more than ``keep_days`` ago.

The last rule is for the servers: a server that starts replays the segment lines newer
than its model's data (``serving.peers``), so a segment is kept as long as a model in
service may still predate its lines. The default, two weeks, covers a weekly retraining
with one missed week; a model older than that is served without the deleted lines'
live history until the next training run, which has them from the store.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

SERVER_SEGMENT = re.compile(r"\d{8}T\d{6,12}Z-\d+\.jsonl")
"""Names of segments written by ``serving.segments.SegmentWriter`` (which flock their file)."""

DEFAULT_KEEP_DAYS = 14.0
"""How long a fully ingested segment of a stopped server is kept (see the module docstring)."""


def abandoned(segment: Path) -> bool:
    """Whether a server's segment has no live writer any more (nobody holds its flock).

    Only segments named like a server's count: other files in ``incoming/`` may be written
    by tools that take no lock, and their unterminated last line keeps waiting.
    """
    if not SERVER_SEGMENT.fullmatch(segment.name):
        return False
    try:
        fd = os.open(segment, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def prune_consumed(directory: Path, committed_end: Mapping[str, int], keep_days: float = DEFAULT_KEEP_DAYS,
                   now: float | None = None) -> list[str]:
    """Delete the segments in ``directory`` that may go (module docstring); returns their names.

    ``committed_end`` maps a segment's file name to the byte offset committed ingests have
    consumed it up to. The caller holds the store's writer lock, so no ingest reads a
    segment while it is deleted.
    """
    if keep_days < 0:
        raise ValueError(f"keep_days must be >= 0, got {keep_days}")
    if not directory.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - keep_days * 86_400
    removed: list[str] = []
    for segment in sorted(directory.glob("*.jsonl")):
        if not SERVER_SEGMENT.fullmatch(segment.name):
            continue
        try:
            stat = segment.stat()
        except FileNotFoundError:
            continue
        if stat.st_mtime > cutoff or committed_end.get(segment.name, -1) != stat.st_size:
            continue
        if not abandoned(segment):  # checked last: it opens the file
            continue
        segment.unlink(missing_ok=True)
        removed.append(segment.name)
    if removed:
        log.info("removed %d fully ingested segment(s) of stopped servers from %s", len(removed), directory)
    return removed
