"""The pairs that may be listed again (:mod:`recsys.repeats`), from the clean events, as polars plans.

A (user, item) pair may return when every one of its events is an action named in
``repeat_after_days``; it returns ``days[action]`` after its latest such event (the latest
of ``ts + days`` over its events). Pairs with any other action never return and are left
out: a list keeps them out through the history alone.
"""

from __future__ import annotations

import logging

import polars as pl

from recsys.settings import EngineSettings

log = logging.getLogger(__name__)

DAY_SECONDS = 86_400.0


def returning_pairs(events: pl.LazyFrame, settings: EngineSettings) -> pl.LazyFrame:
    """``user_id, item_id, weight``: each pair that may return, with the epoch seconds it returns at
    (empty when the settings name no action)."""
    days = settings.repeat_after_days
    if not days:
        return events.select("user_id", "item_id", weight=pl.lit(0.0)).head(0)
    after = pl.col("action").replace_strict(days, default=None, return_dtype=pl.Float64)
    back_at = pl.col("ts").dt.epoch("ms") / 1000.0 + after * DAY_SECONDS
    return (
        events.group_by("user_id", "item_id")
        .agg(returning=after.is_not_null().all(), weight=back_at.max())
        .filter(pl.col("returning"))
        .select("user_id", "item_id", "weight")
    )
