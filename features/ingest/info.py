"""``store_info``: what a store holds, for ``recsys store-info`` (reads only; never creates it).

Counts, date range, quarantine breakdown, poisoning flags (as ingest set them, and what is
left out now) and the bytes of API lines waiting for the next ingest.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from features import poisoning, store
from features.ingest.api_lines import pending_bytes
from features.validate import REASON
from recsys import provenance
from recsys.home import EngineHome


def store_info(home: EngineHome) -> dict:
    """Counts, date range and quarantine breakdown of a store (reads only; never creates it)."""
    interactions = store.scan_interactions(home)
    jobs = [
        interactions.select(pl.len().alias("n"), pl.col("ts").min().alias("first"),
                            pl.col("ts").max().alias("last")),
        interactions.group_by("action").len().sort("action"),
        store.scan_users(home).select(pl.len().alias("n")),
        store.scan_items(home).group_by("kind").len().sort("kind", nulls_last=True),
        store.scan_quarantine(home).group_by(REASON).len().sort(REASON),
    ]
    totals, actions, users, kinds, quarantine = pl.collect_all(jobs)
    flags = _flag_info(home)
    entries = store.ingest_log(home)
    pending = pending_bytes(home, entries)
    first, last = totals["first"][0], totals["last"][0]
    return {
        "home": str(home.root),
        "interactions": int(totals["n"][0]),
        "users": int(users["n"][0]),
        "items": int(kinds["len"].sum()),
        "date_range": {"first": first.isoformat() if first else None,
                       "last": last.isoformat() if last else None},
        "interactions_by_action": dict(actions.iter_rows()),
        "items_by_kind": {("unknown" if k is None else str(k)): n for k, n in kinds.iter_rows()},
        "quarantine": {"rows": int(quarantine["len"].sum()), "by_reason": dict(quarantine.iter_rows())},
        **flags,
        "ingests": sum(1 for e in entries if e.get("kind", "ingest") == "ingest"),
        "quarantine_retries": sum(1 for e in entries if e.get("kind") == "retry"),
        "last_ingest": entries[-1].get("time") if entries else None,
        "incoming_pending_bytes": pending,
    }


def _flag_info(home: EngineHome) -> dict[str, dict[str, Any]]:
    """``flagged`` (as ingest flagged them, per reason and per source) and ``left_out`` (what
    training and the report leave out now: an ``unknown_user`` flag lifts once the users table
    lists the user), each with its row count."""
    raw = store.scan_interactions(home, lift_known_users=False).filter(pl.col(provenance.FLAG).is_not_null())
    by_reason, by_source, now = pl.collect_all([
        poisoning.left_out(raw),
        raw.group_by(provenance.SOURCE, provenance.FLAG).len().sort(provenance.SOURCE, provenance.FLAG),
        poisoning.left_out(store.scan_interactions(home)),
    ])
    sources: dict[str, dict[str, int]] = {}
    for source, flag, n in by_source.iter_rows():
        sources.setdefault(source or provenance.UNKNOWN_API_SOURCE, {})[flag] = n
    return {
        "flagged": {"rows": int(by_reason["rows"].sum()), "by_reason": dict(by_reason.iter_rows()),
                    "by_source": sources},
        "left_out": {"rows": int(now["rows"].sum()), "by_reason": dict(now.iter_rows())},
    }

