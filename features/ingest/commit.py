"""One run's changes to the store as one crash-safe transaction (:mod:`features.writer`).

The accepted interactions (and what an erasure compaction keeps of the files it retires)
become this run's day partitions; the quarantined rows one quarantine file; a changed
catalog or users table replaces the old one. All of it counts from the moment the run's
log line is appended, and not before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from features import writer
from features.ingest.columns import DATE
from features.ingest.erasure import Compaction, no_compaction
from features.ingest.evaluate import Outcome
from recsys.home import EngineHome


def commit(home: EngineHome, ingest_id: str, outcome: Outcome, entry: dict[str, Any],
           compaction: Compaction | None = None) -> Path | None:
    """Write the outcome (and what a compaction keeps) as one transaction; returns the quarantine file."""
    compaction = compaction or no_compaction()
    tx = writer.Transaction(home, ingest_id)
    partitions: list[str] = []
    quarantine_file = None
    quarantine = pl.concat([outcome.quarantine, compaction.quarantine])
    users = outcome.users if outcome.users is not None else compaction.users
    try:
        ordered = pl.concat([outcome.interactions, compaction.interactions]).sort(DATE, "ts", "user_id", "item_id")
        for (date,), part in ordered.partition_by(DATE, as_dict=True, maintain_order=True).items():
            relative = f"interactions/date={date}/{ingest_id}.parquet"
            tx.write(part.drop(DATE), relative)
            partitions.append(relative)
        if quarantine.height:
            quarantine_file = tx.write(quarantine, f"quarantine/{ingest_id}.parquet")
        for frame, target in ((outcome.items, home.items), (users, home.users)):
            if frame is not None:
                tx.stage(frame, target)
    except Exception:
        tx.abort()
        raise
    replaced = [name for name, frame in (("items", outcome.items), ("users", users)) if frame is not None]
    entry["files"] = {
        "interactions": partitions,
        "quarantine": f"quarantine/{ingest_id}.parquet" if quarantine_file else None,
        "replaced": replaced,
    }
    if compaction.retires:
        entry["retires"] = compaction.retires
    if compaction.quarantine_replaces:
        entry["quarantine_replaces"] = [*entry.get("quarantine_replaces", []), *compaction.quarantine_replaces]
    tx.commit(entry)
    return quarantine_file
