"""Right to erasure in the store: rows of erased users never enter it, and those already in it leave.

Users listed in ``store/tombstones.jsonl`` (read by :mod:`recsys.appendlog`'s one rule) are
dropped from every batch (counted as ``erased``). Each run also compacts away the users
erased since the last compaction, inside its own transaction: the day partitions and
quarantine files holding their rows are rewritten without them as files of this run and
retired by its log line, ``users.parquet`` is replaced without them, and their lines in the
API's incoming segments and in the residents' controls log are blanked. The log line records
how far the tombstones were compacted (``erasure.tombstones_end``), so each erasure is
compacted once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features import schemas, store
from features.incoming import abandoned
from features.ingest.api_lines import ApiLines, committed_offsets
from features.ingest.columns import DATE
from features.validate import QUARANTINE, RAW_LINE, TABLE
from recsys import appendlog
from recsys.home import EngineHome


@dataclass(frozen=True)
class Erasure:
    """Users erased on request, and those erased since the last compaction."""

    users: frozenset[str]
    new: frozenset[str]
    tombstones_end: int
    """Bytes of ``tombstones.jsonl`` read (complete lines only)."""
    compacted_end: int
    """Bytes of it that committed runs have already compacted away."""

    @property
    def pending(self) -> bool:
        return self.tombstones_end != self.compacted_end


def read_erasure(home: EngineHome, entries: Iterable[dict]) -> Erasure:
    compacted = max((int(e.get("erasure", {}).get("tombstones_end", 0)) for e in entries), default=0)
    read = appendlog.read_all_lines(home.tombstones)  # a line still being appended counts next time
    start = compacted if compacted <= read.end else 0  # a file rewritten by hand is read again whole
    before, since = (appendlog.parse_tombstones(lines, home.tombstones) for lines in read.split_at(start))
    new = frozenset(t.user_id for t in since)
    return Erasure(new | {t.user_id for t in before}, new, read.end, compacted)


def _quoted(users: Iterable[str]) -> list[str]:
    """The JSON spellings of the ids, as they appear inside a raw (torn) line."""
    return sorted({json.dumps(u, ensure_ascii=ascii_only) for u in users for ascii_only in (False, True)})


def erased_mask(users: frozenset[str], *, raw_line: bool) -> pl.Expr:
    """Rows of ``users``: by their user_id, or by a raw line that names one of them."""
    by_id = pl.col("user_id").str.strip_chars().is_in(sorted(users)).fill_null(False)
    if not raw_line:
        return by_id
    return by_id | pl.col(RAW_LINE).str.contains_any(_quoted(users)).fill_null(False)


def drop_erased(frame: pl.DataFrame, erasure: Erasure, dropped: dict[str, int]) -> pl.DataFrame:
    """``frame`` without the erased users' rows; counts them per source table into ``dropped``."""
    if not erasure.users or frame.height == 0:
        return frame
    mask = frame.select(erased_mask(erasure.users, raw_line=RAW_LINE in frame.columns)).to_series()
    for table, n in frame.filter(mask).group_by(TABLE).len().iter_rows():
        dropped[table] = dropped.get(table, 0) + n
    return frame.filter(~mask)


@dataclass
class Compaction:
    """What one run rewrites to remove users erased since the last compaction."""

    interactions: pl.DataFrame  # the other rows of the retired partition files, plus DATE
    quarantine: pl.DataFrame  # the other rows of the replaced quarantine files
    retires: list[str] = field(default_factory=list)  # partition files, relative to the store
    quarantine_replaces: list[str] = field(default_factory=list)  # quarantine file stems
    users: pl.DataFrame | None = None  # users.parquet without them, when it holds any


def no_compaction() -> Compaction:
    return Compaction(pl.DataFrame(schema={**schemas.STORED_INTERACTIONS, DATE: pl.String()}),
                      pl.DataFrame(schema=QUARANTINE))


def find_compaction(home: EngineHome, erasure: Erasure) -> Compaction:
    """Find the files holding rows of newly erased users, and what remains of them."""
    result = no_compaction()
    if not erasure.new:
        return result
    path = "__file"
    files = store.interaction_files(home)
    if files:
        hits = store.scan_parquet_as(files, schemas.STORED_INTERACTIONS, include_file_paths=path).filter(
            erased_mask(erasure.new, raw_line=False)).select(pl.col(path).unique()).collect()[path].to_list()
        if hits:
            kept = store.scan_parquet_as(sorted(hits), schemas.STORED_INTERACTIONS, include_file_paths=path).filter(
                ~erased_mask(erasure.users, raw_line=False)).collect()
            day = pl.col(path).map_elements(lambda f: Path(f).parent.name.removeprefix("date="), pl.String)
            result.interactions = kept.select([*schemas.STORED_INTERACTIONS, day.alias(DATE)])
            result.retires = sorted(Path(f).relative_to(home.store).as_posix() for f in hits)
    quarantine = store.quarantine_files(home)
    if quarantine:
        hits = pl.scan_parquet(quarantine, include_file_paths=path).filter(
            erased_mask(erasure.new, raw_line=True)).select(pl.col(path).unique()).collect()[path].to_list()
        if hits:
            result.quarantine = pl.scan_parquet(sorted(hits)).select(list(QUARANTINE)).filter(
                ~erased_mask(erasure.users, raw_line=True)).collect()
            result.quarantine_replaces = sorted(Path(f).stem for f in hits)
    if home.users.exists() and pl.scan_parquet(home.users).filter(
            erased_mask(erasure.users, raw_line=False)).select(pl.len()).collect().item():
        result.users = store.scan_users(home).collect()  # the store reads them without the erased
    return result


def blank_erased_lines(home: EngineHome, spans: dict[str, tuple[int, int]], users: frozenset[str],
                       directory: Path | None = None) -> int:
    """Overwrite the erased users' complete lines in these byte ranges of the incoming segments
    (of ``directory``'s segments when given: the posted requests' ones).

    Spaces of the same length keep every offset and line number the ingest log recorded, and a
    blank line is no row. A server appending to a segment only writes past the ranges given
    (they end at a newline the ingest has read), so the two never touch the same bytes.
    """
    blanked = 0
    for name, (start, end) in sorted(spans.items()):
        segment = (directory or home.incoming) / name
        if segment.exists() and end > start:
            blanked += _blank_lines_of(segment, start, end, users, abandoned(segment))
    return blanked


def blank_erased_controls(home: EngineHome, users: frozenset[str]) -> int:
    """Overwrite the erased users' complete lines of the residents' controls log
    (:mod:`recsys.controls`) with spaces: every server reading it keeps its offset, and a blank
    line is no choice. A line still being appended is left to the next run."""
    path = home.controls
    if not users or not path.exists():
        return 0
    return _blank_lines_of(path, 0, path.stat().st_size, users, include_tail=False)


def _blank_lines_of(path: Path, start: int, end: int, users: frozenset[str], include_tail: bool) -> int:
    """Blank the erased users' lines in bytes ``[start, end)`` of ``path`` (``include_tail``: the
    unterminated last line too, when its writer is known to be gone)."""
    blanked = 0
    with open(path, "r+b") as fh:
        read = appendlog.read_lines(fh, start, end)
        lines = read.lines
        if read.tail and include_tail:  # a line still being written is not ours to touch
            lines = [*lines, read.tail]
        offset = start
        for line in lines:
            if line.strip() and _line_is_erased(line, users):
                os.pwrite(fh.fileno(), b" " * len(line), offset)
                blanked += 1
            offset += len(line) + 1
        if blanked:
            os.fsync(fh.fileno())
    return blanked


def _line_is_erased(line: bytes, users: frozenset[str]) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # a torn line: erased if it names one of them
        text = line.decode("utf-8", errors="replace")
        return any(quoted in text for quoted in _quoted(users))
    user_id = record.get("user_id") if isinstance(record, dict) else None
    return isinstance(user_id, str) and user_id.strip() in users


def segment_spans(home: EngineHome, entries: list[dict], incoming: ApiLines | None,
                  erasure: Erasure) -> dict[str, tuple[int, int]]:
    """Byte ranges of the segments to clean: what this run read, and, when users were newly
    erased, everything ingested so far."""
    spans = {name: (span["start"], span["end"]) for name, span in (incoming.offsets if incoming else {}).items()}
    if erasure.new:
        for name, done in committed_offsets(entries).items():
            spans[name] = (0, max(done["end"], spans.get(name, (0, 0))[1]))
        spans = {name: (0, end) for name, (_, end) in spans.items()}
    return spans

