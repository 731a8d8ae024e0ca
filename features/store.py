"""Reading the store: the validated tables as polars LazyFrames.

Commit rule: a data file written by ingest is named after its ingest id
(``interactions/date=YYYY-MM-DD/<ingest-id>.parquet``) and counts only once a line for that
id is in ``ingest_log.jsonl``. Readers therefore never see half an ingest, whatever point a
crash interrupted it at; a file retired by a later committed run (``retires`` in its log
line: an erasure compaction rewrote it) no longer counts. Erased users
(``tombstones.jsonl``) are filtered out on read until the next ingest compacts them away.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from features import schemas
from features.validate import QUARANTINE
from recsys.home import EngineHome

log = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict]:
    """All complete JSON lines of a file; a torn last line (crash mid-append) is skipped."""
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping torn line %d of %s", number, path)
    return records


def ingest_log(home: EngineHome) -> list[dict]:
    """Every committed ingest, oldest first."""
    return read_jsonl(home.ingest_log)


def committed_ingest_ids(home: EngineHome) -> set[str]:
    return {entry["ingest_id"] for entry in ingest_log(home) if "ingest_id" in entry}


def erased_users(home: EngineHome) -> set[str]:
    """Users erased on request whose rows may still sit in data files."""
    return {entry["user_id"] for entry in read_jsonl(home.tombstones) if "user_id" in entry}


def retired_files(entries: list[dict]) -> set[str]:
    """Data files (relative to the store) that a committed run replaced (erasure compaction)."""
    return {path for entry in entries for path in entry.get("retires", [])}


def interaction_files(home: EngineHome) -> list[Path]:
    """Committed interaction partition files that no later run retired, in a stable order."""
    if not home.interactions.exists():
        return []
    entries = ingest_log(home)
    committed = {entry["ingest_id"] for entry in entries if "ingest_id" in entry}
    retired = retired_files(entries)
    files = sorted(home.interactions.glob("date=*/*.parquet"))
    return [f for f in files if f.stem in committed and f.relative_to(home.store).as_posix() not in retired]


def scan_interactions(home: EngineHome) -> pl.LazyFrame:
    """All committed interactions (schema :data:`features.schemas.INTERACTIONS`)."""
    files = interaction_files(home)
    if not files:
        return schemas.empty("interactions").lazy()
    frame = pl.scan_parquet(files, hive_partitioning=False).select(list(schemas.INTERACTIONS))
    return _without_erased(frame, home)


def scan_users(home: EngineHome) -> pl.LazyFrame:
    """The users table (schema :data:`features.schemas.USERS`)."""
    if not home.users.exists():
        return schemas.empty("users").lazy()
    return _without_erased(pl.scan_parquet(home.users).select(list(schemas.USERS)), home)


def scan_items(home: EngineHome) -> pl.LazyFrame:
    """The catalog (schema :data:`features.schemas.ITEMS`)."""
    if not home.items.exists():
        return schemas.empty("items").lazy()
    return pl.scan_parquet(home.items).select(list(schemas.ITEMS))


def _without_erased(frame: pl.LazyFrame, home: EngineHome) -> pl.LazyFrame:
    erased = erased_users(home)
    if not erased:
        return frame
    # a null user_id (an item row or a torn line in quarantine) is nobody's
    return frame.filter(~pl.col("user_id").is_in(sorted(erased)).fill_null(False))


def quarantine_files(home: EngineHome) -> list[Path]:
    """The live quarantine files: committed and not replaced by a later retry.

    A retry commits one new file holding the rows still failing and lists the files it
    replaces under ``quarantine_replaces`` in its log line, so the swap is atomic too.
    """
    if not home.quarantine.exists():
        return []
    entries = ingest_log(home)
    committed = {entry["ingest_id"] for entry in entries if "ingest_id" in entry}
    superseded = {old for entry in entries for old in entry.get("quarantine_replaces", [])}
    return [f for f in sorted(home.quarantine.glob("*.parquet")) if f.stem in committed - superseded]


def scan_quarantine(home: EngineHome) -> pl.LazyFrame:
    """Every row currently in quarantine (schema :data:`features.validate.QUARANTINE`)."""
    files = quarantine_files(home)
    if not files:
        return pl.DataFrame(schema=QUARANTINE).lazy()
    return _without_erased(pl.scan_parquet(files).select(list(QUARANTINE)), home)
