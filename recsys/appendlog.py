"""The engine home's append-only JSON-lines files: reading complete lines, appending, tombstones.

Several files in a home only ever grow by whole lines: the ingest log, the API's incoming
segments and the erasure tombstones. Their writers append one line per ``write`` and fsync
it; their readers remember a byte offset and come back for what was added since. Both sides
live here so that every reader agrees on one rule: a line counts once its newline is on
disk. An unterminated last line is a line still being written (or the torn tail of a writer
that died: only the caller can tell, so it is handed over as ``tail``) and waits.

Tombstones (``store/tombstones.jsonl``, one ``{"user_id", "erased_at"}`` per erasure) are
read by ingest, the store's readers and every server process; :func:`read_tombstones` is
their one rule: a complete line holding a JSON object with a string ``user_id`` names that
user (surrounding spaces removed, as ingest removes them from every stored id); any other
non-blank line is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from recsys.durable import fsync_dir

log = logging.getLogger(__name__)


class Shrunk(OSError):
    """The file is shorter than the offset a reader had reached: replaced or cut back by hand."""


@dataclass(frozen=True)
class Lines:
    """The complete lines of one read, and where the next read starts."""

    start: int
    """The offset the read began at."""
    lines: list[bytes]
    """Each complete line without its newline; blank lines are kept (they hold line numbers)."""
    end: int
    """The offset just after the last complete line (``start`` when there is none)."""
    tail: bytes = b""
    """Bytes after the last newline: a line still being written, not part of ``lines``."""

    def split_at(self, offset: int) -> tuple[list[bytes], list[bytes]]:
        """The lines that start before ``offset``, and those that start at or after it."""
        position = self.start
        before: list[bytes] = []
        after: list[bytes] = []
        for line in self.lines:
            (after if position >= offset else before).append(line)
            position += len(line) + 1
        return before, after


def read_lines(fh: BinaryIO, offset: int, end: int) -> Lines:
    """The complete lines in bytes ``[offset, end)`` of an open binary file."""
    fh.seek(offset)
    chunk = fh.read(max(end - offset, 0))
    complete = chunk.rfind(b"\n") + 1
    return Lines(offset, chunk[:complete].split(b"\n")[:-1], offset + complete, chunk[complete:])


def read_new_lines(path: Path, offset: int = 0) -> Lines:
    """The complete lines appended to ``path`` from ``offset`` on.

    Raises :class:`FileNotFoundError` for a missing file and :class:`Shrunk` when the file is
    now shorter than ``offset``. An unchanged file costs one ``stat``.
    """
    size = os.stat(path).st_size
    if size < offset:
        raise Shrunk(f"{path} is {size} bytes, shorter than the offset {offset} already read")
    if size == offset:
        return Lines(offset, [], offset)
    with open(path, "rb") as fh:
        return read_lines(fh, offset, size)


def read_all_lines(path: Path) -> Lines:
    """Every complete line of ``path``; a missing file has none."""
    try:
        return read_new_lines(path)
    except FileNotFoundError:
        return Lines(0, [], 0)


def next_line_start(fh: BinaryIO, offset: int, size: int) -> int | None:
    """``offset`` if a line starts there, else the start of the next line (None: none yet).

    For a reader whose offset may no longer follow a newline because the file changed under
    it (a failed write cut back and rewritten): it resynchronises instead of reading half a line.
    """
    if offset == 0:
        return 0
    fh.seek(offset - 1)
    if fh.read(1) == b"\n":
        return offset
    rest = fh.read(max(size - offset, 0))
    newline = rest.find(b"\n")
    if newline < 0:
        return None
    log.warning("skipping a partial line in %s at byte %d", getattr(fh, "name", "a file"), offset)
    return offset + newline + 1


def json_object(line: bytes) -> dict[str, Any] | None:
    """A line as a JSON object (None if it is not one: torn, not JSON, or another JSON value)."""
    try:
        value = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def append_line(path: Path, line: bytes) -> None:
    """Append one newline-terminated line to a file several processes may append to, and fsync it.

    One ``write`` on an ``O_APPEND`` descriptor: concurrent appenders never interleave
    within a line, and the line (and a newly created file's name) is on disk on return.
    """
    if not line.endswith(b"\n"):
        raise ValueError("an appended line must end with a newline")
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):  # a short write on a regular file means the disk is full
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def append_json_line(path: Path, record: Mapping[str, Any]) -> None:
    """:func:`append_line` of ``record`` as one compact JSON line."""
    append_line(path, (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))


# ---- tombstones ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tombstone:
    """One erasure on request."""

    user_id: str
    erased_at: str
    """As recorded (ISO-8601 UTC); empty when the line has none."""


def parse_tombstones(lines: Iterable[bytes], source: Path | str = "tombstones") -> list[Tombstone]:
    """The tombstones among complete lines, in file order (the module docstring's rule)."""
    found = []
    for line in lines:
        if not line.strip():
            continue
        record = json_object(line)
        user_id = record.get("user_id") if record is not None else None
        if record is None or not isinstance(user_id, str) or not user_id.strip():
            log.warning("skipping a tombstone line of %s that names no user", source)
            continue
        found.append(Tombstone(user_id.strip(), str(record.get("erased_at", ""))))
    return found


def read_tombstones(path: Path, offset: int = 0) -> tuple[list[Tombstone], int]:
    """The tombstones of complete lines from ``offset`` on, and the offset after them.

    A missing file holds none. Raises :class:`Shrunk` when the file is shorter than ``offset``.
    """
    try:
        lines = read_new_lines(path, offset)
    except FileNotFoundError:
        return [], offset
    return parse_tombstones(lines.lines, path), lines.end


def append_tombstone(path: Path, tombstone: Tombstone) -> None:
    """Record an erasure durably (see :func:`append_line`)."""
    append_json_line(path, {"user_id": tombstone.user_id, "erased_at": tombstone.erased_at})
