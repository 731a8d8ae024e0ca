"""Following the other servers' segments: complete lines appended since the last look.

Every server process appends what it accepts to its own segment in ``store/incoming/``
(:mod:`serving.segments`); :class:`SegmentTail` follows every *other* server's segment from
a byte offset and hands over only complete new lines (:mod:`recsys.appendlog`). Lines
ingest blanked for an erasure (spaces of the same length) are skipped; a segment replaced
or cut short is followed from its new end, and a read that lands inside a line skips to the
next one. What the lines mean is :mod:`serving.peers`' business.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from recsys import appendlog
from serving.segments import SEGMENT_NAME

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1 << 20
"""Most bytes read from a segment at once (a server's line is well under a kilobyte)."""


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
