"""Served lists into the store: ``store/exposures_incoming/*.jsonl`` to ``store/exposures/date=YYYY-MM-DD/``.

Part of every ingest, under the store's writer lock. The complete lines of each server's
exposure segment (:mod:`serving.exposures`) not read before (``store/exposures_offsets.json``)
become rows of one Parquet file per day, named after the segment and the byte range read
(``<segment>-<start>.parquet``): a crash before the offsets are saved re-reads the same range
into the same file names, so nothing is stored twice. A line that is no JSON object (a
writer that died mid-line) is skipped and counted.

Erasure: rows of erased users never enter; users erased since a file was written are
removed from it (the file rewritten without them in one rename), and their posted lines
blanked (:func:`features.ingest.erasure.blank_erased_lines`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from features.incoming import abandoned
from features.ingest.erasure import blank_erased_lines
from features.ingest.line_offsets import read_offsets, replace_parquet, write_offsets
from recsys import appendlog
from recsys.home import EngineHome

log = logging.getLogger(__name__)

SCHEMA: dict[str, pl.DataType] = {
    "recommendation_id": pl.String(), "ts": pl.Datetime("us", "UTC"), "endpoint": pl.String(),
    "user_id": pl.String(), "region_code": pl.String(), "target_item": pl.String(),
    "model_version": pl.String(), "variant": pl.String(), "items": pl.List(pl.String()),
    "positions": pl.List(pl.Int64()), "filters": pl.String(), "fallback": pl.String(),
}
"""One row per served list; ``filters`` is the query's JSON."""


@dataclass
class ExposureCounts:
    """What one ingest did with the exposure lines."""

    lines: int = 0
    stored: int = 0
    torn: int = 0
    erased: int = 0
    removed: int = 0
    """Rows of users erased since, removed from stored files."""


def offsets_path(home: EngineHome) -> Path:
    return home.store / "exposures_offsets.json"


def ingest_exposures(home: EngineHome, erased: frozenset[str]) -> ExposureCounts | None:
    """Fold new exposure lines into the store (the caller holds the writer lock); None: nothing to do."""
    offsets = read_offsets(offsets_path(home))
    counts = ExposureCounts()
    reached = dict(offsets)
    segments = sorted(home.exposure_lines.glob("*.jsonl")) if home.exposure_lines.exists() else []
    for segment in segments:
        start = offsets.get(segment.name, 0)
        try:
            read = appendlog.read_new_lines(segment, start)
        except appendlog.Shrunk:
            log.warning("exposure segment %s shrank below its read offset; skipping it", segment)
            continue
        lines = list(read.lines)
        end = read.end
        if read.tail and abandoned(segment):  # its writer died mid-line: that line never completes
            lines.append(read.tail)
            end += len(read.tail)
        if end == start:
            continue
        rows = _rows(lines, erased, counts)
        _write_days(home, rows, f"{segment.stem}-{start}")
        reached[segment.name] = end
    counts.removed = _remove_erased(home, erased)
    if reached == offsets and not counts.removed:
        return None
    write_offsets(offsets_path(home), reached)
    if erased:
        blank_erased_lines(home, {name: (0, end) for name, end in reached.items()}, erased,
                           directory=home.exposure_lines)
    log.info("exposures: %d lines, %d stored, %d torn, %d erased (%d removed from the store)",
             counts.lines, counts.stored, counts.torn, counts.erased, counts.removed)
    return counts


def read_exposures(home: EngineHome, erased: frozenset[str] = frozenset()) -> pl.DataFrame:
    """Every stored served list (schema :data:`SCHEMA`), lists of erased users left out."""
    files = sorted(home.exposures.glob("date=*/*.parquet")) if home.exposures.exists() else []
    if not files:
        return pl.DataFrame(schema=SCHEMA)
    frame = pl.concat([pl.read_parquet(f) for f in files]).unique("recommendation_id", keep="first")
    return frame.filter(~pl.col("user_id").is_in(sorted(erased)) | pl.col("user_id").is_null()) if erased else frame


def _rows(lines: list[bytes], erased: frozenset[str], counts: ExposureCounts) -> list[dict[str, Any]]:
    rows = []
    for line in lines:
        if not line.strip():
            continue
        counts.lines += 1
        record = appendlog.json_object(line)
        if record is None or not isinstance(record.get("recommendation_id"), str):
            counts.torn += 1
            continue
        if record.get("user_id") in erased:
            counts.erased += 1
            continue
        rows.append({**{c: record.get(c) for c in SCHEMA}, "filters": json.dumps(record.get("filters") or {},
                                                                               ensure_ascii=False)})
    counts.stored += len(rows)
    return rows


def _write_days(home: EngineHome, rows: list[dict[str, Any]], name: str) -> None:
    if not rows:
        return
    raw = pl.DataFrame(rows, schema={**SCHEMA, "ts": pl.String()}, strict=False)
    frame = raw.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", strict=False).cast(SCHEMA["ts"]))
    frame = frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d").alias("__day"))
    for (day,), part in frame.group_by("__day"):
        replace_parquet(part.drop("__day"), home.exposures / f"date={day}" / f"{name}.parquet")


def _remove_erased(home: EngineHome, erased: frozenset[str]) -> int:
    if not erased or not home.exposures.exists():
        return 0
    removed = 0
    for path in sorted(home.exposures.glob("date=*/*.parquet")):
        frame = pl.read_parquet(path)
        kept = frame.filter(~pl.col("user_id").is_in(sorted(erased)) | pl.col("user_id").is_null())
        if kept.height < frame.height:
            removed += frame.height - kept.height
            replace_parquet(kept, path)
    return removed

