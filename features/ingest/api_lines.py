"""The API's lines: new complete lines of ``store/incoming/*.jsonl`` since the last committed ingest.

Each committed run records, per segment, the byte range and line numbers it consumed
(``incoming`` in its log line); the next run resumes at the furthest committed offset. Only
complete lines are read (:mod:`recsys.appendlog`): an unterminated last line waits for the
next run, unless its writer died mid-line (:func:`features.incoming.abandoned`), in which
case it is torn for good and read as one last line (it goes to quarantine). Which segments
may be deleted once consumed is :mod:`features.incoming`'s rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from features.incoming import abandoned, prune_consumed
from features.ingest.columns import APP
from features.validate import RAW_LINE, ROW, SOURCE, TORN
from recsys import appendlog, provenance
from recsys.contract import ALL_COLUMNS
from recsys.home import EngineHome
from recsys.item_rules import field_text

log = logging.getLogger(__name__)

_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in ALL_COLUMNS["interactions"]},
    SOURCE: pl.String(), ROW: pl.Int64(), TORN: pl.Boolean(), RAW_LINE: pl.String(), APP: pl.String(),
}


@dataclass
class ApiLines:
    """The rows of the new lines, and per segment what was read (the run's ``incoming`` log entry)."""

    frame: pl.DataFrame
    offsets: dict[str, dict[str, int]]
    """Per segment name: ``start`` and ``end`` bytes, ``first_line`` number and ``lines`` consumed."""


def committed_offsets(entries: Iterable[dict], key: str = "incoming") -> dict[str, dict[str, int]]:
    """Per segment, the furthest byte (and the line number after it) a committed run consumed
    (``key``: the log entry's field of these segments; ``item_lines`` for the catalogue's)."""
    done: dict[str, dict[str, int]] = {}
    for entry in entries:
        for name, span in entry.get(key, {}).items():
            if span["end"] >= done.get(name, {"end": -1})["end"]:
                done[name] = {"end": span["end"], "next_line": span["first_line"] + span["lines"]}
    return done


def read_api_lines(home: EngineHome, entries: list[dict]) -> ApiLines:
    """New complete lines of every segment, from the committed offset up to the last newline."""
    rows: list[dict[str, Any]] = []
    offsets: dict[str, dict[str, int]] = {}
    for segment, lines, span in new_segment_lines(home.incoming, committed_offsets(entries)):
        rows.extend(_parse_lines(lines, str(segment), span["first_line"]))
        offsets[segment.name] = span
    frame = pl.DataFrame(rows, schema=_SCHEMA) if rows else pl.DataFrame(schema=_SCHEMA)
    return ApiLines(frame, offsets)


def new_segment_lines(directory: Path, done: dict[str, dict[str, int]]
                      ) -> Iterator[tuple[Path, list[bytes], dict[str, int]]]:
    """Per segment of ``directory`` with new complete lines since ``done`` (:func:`committed_offsets`):
    the segment, its new lines, and their span (``start``, ``end``, ``first_line``, ``lines``)."""
    segments = sorted(directory.glob("*.jsonl")) if directory.exists() else []
    for segment in segments:
        start = done.get(segment.name, {}).get("end", 0)
        first_line = done.get(segment.name, {}).get("next_line", 1)
        read = new_lines(segment, start)
        if read is not None:
            lines, end = read
            yield segment, lines, {"start": start, "end": end, "first_line": first_line, "lines": len(lines)}


def new_lines(segment: Path, start: int) -> tuple[list[bytes], int] | None:
    """The segment's lines from ``start`` and the offset after them (None: nothing to read)."""
    try:
        read = appendlog.read_new_lines(segment, start)
    except appendlog.Shrunk:
        log.warning("incoming segment %s shrank below its consumed offset; skipping it", segment)
        return None
    lines, end = read.lines, read.end
    if read.tail and abandoned(segment):
        # The writer died mid-line: that line is torn for good and read as one last line.
        log.warning("the server writing %s died mid-line; its torn last line goes to quarantine", segment)
        lines, end = [*lines, read.tail], end + len(read.tail)
    return (lines, end) if end > start else None


def _parse_lines(lines: list[bytes], source: str, first_line: int) -> list[dict[str, Any]]:
    """Rows of the non-blank lines, numbered from ``first_line``; a line that is no JSON object is torn."""
    rows = []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        row: dict[str, Any] = {SOURCE: source, ROW: number, TORN: False, RAW_LINE: None, APP: None}
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            row.update({c: field_text(record.get(c)) for c in ALL_COLUMNS["interactions"]})
            row[APP] = field_text(record.get(provenance.SOURCE))
        except ValueError:  # also covers UnicodeDecodeError
            row.update({TORN: True, RAW_LINE: line.decode("utf-8", errors="replace")})
        rows.append(row)
    return rows


def pending_bytes(home: EngineHome, entries: list[dict]) -> int:
    """Bytes of the segments no committed run has consumed yet."""
    if not home.incoming.exists():
        return 0
    done = committed_offsets(entries)
    return sum(max(seg.stat().st_size - done.get(seg.name, {}).get("end", 0), 0)
               for seg in home.incoming.glob("*.jsonl"))


def prune_segments(home: EngineHome, entries: list[dict], keep_days: float) -> list[str]:
    """Delete the consumed segments of stopped servers older than ``keep_days`` (:mod:`features.incoming`)."""
    committed = {name: done["end"] for name, done in committed_offsets(entries).items()}
    items = {name: done["end"] for name, done in committed_offsets(entries, "item_lines").items()}
    return [*prune_consumed(home.incoming, committed, keep_days),
            *(f"items/{name}" for name in prune_consumed(home.item_lines, items, keep_days))]
