"""Polars schemas of the tables as the store keeps them (after validation).

Every reader and writer of the store uses these, so a stored file always has the same
columns and types whatever the provider sent.
"""

from __future__ import annotations

import polars as pl

UTC_TIME = pl.Datetime("us", "UTC")

INTERACTIONS = {
    "user_id": pl.String,
    "item_id": pl.String,
    "action": pl.String,
    "ts": UTC_TIME,
    "value": pl.Float64,
}

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
}

SCHEMAS = {"interactions": INTERACTIONS, "users": USERS, "items": ITEMS}


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the stored schema of ``table``."""
    return pl.DataFrame(schema=SCHEMAS[table])
