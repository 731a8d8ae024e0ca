"""Reservations per item, as every server process of the home sees them: the store's and the live posts.

A place is held by one resident's ``reserve`` of the item: the count of an item is the number
of distinct residents who reserved it. Two sources, read as sets of (item, user) so that a
reservation in both (posted, then ingested) counts once:

* the store's committed interaction files (the rows ingest accepted and did not flag as likely
  poisoning; a manufactured burst must not be able to fill an event and hide it), read when
  the process starts and again after each model reload (``refresh_store``);
* every server's interaction segment in ``store/incoming/``, this process's own included,
  followed from where the last look ended (:class:`serving.segment_tail.SegmentTail`).

What a count means for the catalogue is :mod:`recsys.capacity`'s business.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import polars as pl

from recsys.appendlog import json_object
from recsys.home import EngineHome
from serving.segment_tail import SegmentTail

log = logging.getLogger(__name__)

RESERVE = "reserve"
NO_OWN_SEGMENT = Path("\u0000none")
"""The tail's "own" segment: a name no server's file has, so every segment is followed, ours too."""


class Reservations:
    """Distinct reserving residents per item id."""

    def __init__(self, home: EngineHome) -> None:
        self.home = home
        self.tail = SegmentTail(home.incoming, NO_OWN_SEGMENT)
        self._stored: dict[str, set[str]] = {}
        self._posted: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        with self._lock:
            items = set(self._stored) | set(self._posted)
            return {item: len(self._stored.get(item, set()) | self._posted.get(item, set())) for item in items}

    def refresh_store(self) -> None:
        """Read the store's reservations again (blocking IO; the old counts stay if it cannot be read)."""
        try:
            stored = stored_reservations(self.home)
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            log.warning("cannot read the store's reservations; capacity counts live posts only: %s", exc)
            return
        with self._lock:
            self._stored = stored

    def follow(self, unchanged_since: float = -math.inf) -> int:
        """Take in the reservations posted since the last look (blocking IO); returns how many were new.

        A segment first seen and last written before ``unchanged_since`` is not read: its lines
        are in the store the served model came from, and :meth:`refresh_store` counted them.
        """
        found: list[tuple[str, str]] = []

        def handle(line: bytes) -> None:
            record = json_object(line)
            if record is None or record.get("action") != RESERVE:
                return
            item, user = record.get("item_id"), record.get("user_id")
            if isinstance(item, str) and isinstance(user, str):
                found.append((item.strip(), user.strip()))

        self.tail.read(handle, unchanged_since=unchanged_since)
        with self._lock:
            for item, user in found:
                self._posted.setdefault(item, set()).add(user)
        return len(found)


def stored_reservations(home: EngineHome) -> dict[str, set[str]]:
    """The residents who reserved each item, in the store's committed files (flagged rows left out)."""
    files = committed_interaction_files(home)
    if not files:
        return {}
    frames = []
    for path in files:
        # a file written before the flag column existed has no flagged rows
        flagged = "flag" in pl.read_parquet_schema(path)
        frame = pl.scan_parquet(path).filter(pl.col("action") == RESERVE)
        if flagged:
            frame = frame.filter(pl.col("flag").is_null())
        frames.append(frame.select("item_id", "user_id"))
    rows = pl.concat(frames).unique().collect()
    found: dict[str, set[str]] = {}
    for item, user in rows.iter_rows():
        found.setdefault(item, set()).add(user)
    return found


def committed_interaction_files(home: EngineHome) -> list[Path]:
    """Interaction files a committed ingest wrote and no later one retired (the store's own rule)."""
    if not home.ingest_log.exists():
        return []
    committed: set[str] = set()
    retired: set[str] = set()
    with open(home.ingest_log, "rb") as fh:
        for line in fh:
            entry = json_object(line)
            if entry is None:
                continue
            if isinstance(entry.get("ingest_id"), str):
                committed.add(entry["ingest_id"])
            retired.update(str(path) for path in entry.get("retires", []) or [])
    files = sorted(home.interactions.glob("date=*/*.parquet")) if home.interactions.exists() else []
    return [f for f in files if f.stem in committed and f.relative_to(home.store).as_posix() not in retired]

