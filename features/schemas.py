"""Polars schemas of the tables as the store keeps them (after validation).

Every reader and writer of the store uses these, so a stored file always has the same
columns and types whatever the provider sent.
"""

from __future__ import annotations

import polars as pl

from recsys.provenance import FLAG, SOURCE

UTC_TIME = pl.Datetime("us", "UTC")

INTERACTIONS = {
    "user_id": pl.String,
    "item_id": pl.String,
    "action": pl.String,
    "ts": UTC_TIME,
    "value": pl.Float64,
}

PROVENANCE = {
    SOURCE: pl.String,
    FLAG: pl.String,
}
"""Columns every stored interaction carries beyond the contract: who sent it, and why ingest
flagged it (:mod:`features.poisoning`). Files written before them read as nulls."""

ATTRIBUTION = {
    "recommendation_id": pl.String,
    "position": pl.Int64,
}
"""The served list an interaction names, and the item's place in it (optional: null when not sent)."""

STORED_INTERACTIONS = {**INTERACTIONS, **PROVENANCE, **ATTRIBUTION}
"""An interaction partition file: the contract's columns (which decide what is a duplicate)
plus :data:`PROVENANCE`."""

USERS = {
    "user_id": pl.String,
    "region_code": pl.String,
    "age_band": pl.String,
    "area_type": pl.String,
    "registered_at": UTC_TIME,
}

ITEMS = {
    "item_id": pl.String,
    "title": pl.String,
    "kind": pl.String,
    "category": pl.String,
    "tags": pl.List(pl.String),
    "region_code": pl.String,
    "venue_id": pl.String,
    "lat": pl.Float64,
    "lon": pl.Float64,
    "starts_at": UTC_TIME,
    "ends_at": UTC_TIME,
    "capacity": pl.Int64,
    "provider": pl.String,
    "is_free": pl.Boolean,
    "hidden": pl.Boolean,
    "min_age": pl.Int64,
    "editorial": pl.Boolean,
    "series_id": pl.String,
}

ADDED_LATER = {**PROVENANCE, **ATTRIBUTION, "min_age": pl.Int64, "editorial": pl.Boolean, "series_id": pl.String}
"""Columns a store file written before they existed lacks: such a file reads them as nulls."""

SCHEMAS = {"interactions": INTERACTIONS, "users": USERS, "items": ITEMS}


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the stored schema of ``table``."""
    return pl.DataFrame(schema=SCHEMAS[table])
