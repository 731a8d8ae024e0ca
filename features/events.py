"""Clean events and their weights: the first stage of every training and report job.

clean: drop interactions on hidden items, exact duplicates and rows flagged at ingest as
likely poisoning (:mod:`features.poisoning`), so no model, evaluation window or report counts them;
a ``not_interested`` ("不感兴趣") cancels the user's events on that item up to it and is itself no
engagement, so the model forgets the pair (:func:`dismissals` keeps it for the artifact);
weight: the configured action weight (``rate``: value x rate_weight_per_star);
decay: weight · 0.5^(age / half_life), age measured back from a reference time, so last
week's reservation counts more than one from two months ago (half-life 0: no decay).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from features.poisoning import without_flagged
from recsys.contract import NEGATIVE_ACTIONS
from recsys.settings import EngineSettings


def clean_events(interactions: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Interactions on visible catalog items, exact duplicates and rows flagged at ingest
    (:func:`features.poisoning.without_flagged`) removed, without the provenance columns, and
    without what a ``not_interested`` cancelled (:func:`without_dismissed`)."""
    visible = items.filter(~pl.col("hidden").fill_null(False)).select("item_id")
    events = without_flagged(interactions).unique(maintain_order=True).join(visible, on="item_id", how="semi")
    return without_dismissed(events)


def dismissals(events: pl.LazyFrame) -> pl.LazyFrame:
    """The latest ``not_interested`` of each (user_id, item_id) pair, as ``ts``."""
    return (events.filter(pl.col("action").is_in(sorted(NEGATIVE_ACTIONS)))
            .group_by("user_id", "item_id").agg(pl.col("ts").max()))


def without_dismissed(events: pl.LazyFrame) -> pl.LazyFrame:
    """``events`` without negative actions and without each pair's events up to its latest
    ``not_interested``: the resident took back whatever those events said (events after it
    count again: they engaged anew)."""
    latest = dismissals(events).rename({"ts": "__dismissed"})
    return (events.filter(~pl.col("action").is_in(sorted(NEGATIVE_ACTIONS)))
            .join(latest, on=["user_id", "item_id"], how="left")
            .filter(pl.col("__dismissed").is_null() | (pl.col("ts") > pl.col("__dismissed")))
            .drop("__dismissed"))


def action_weight(settings: EngineSettings) -> pl.Expr:
    """The weight of each interaction from the configured action weights."""
    weights = pl.col("action").replace_strict(settings.action_weights, default=0.0, return_dtype=pl.Float64)
    rated = pl.col("value").fill_null(0.0) * settings.rate_weight_per_star
    return pl.when(pl.col("action") == "rate").then(rated).otherwise(weights).alias("weight")


MIN_DECAYED_WEIGHT = 1e-6
"""Floor of a positive decayed weight. A years-old event still happened: without the floor its
weight underflows to 0 in float32, the pair becomes an explicit zero in the sparse history,
and the item escapes the already-engaged filter."""


def decayed_weight(reference: datetime, half_life_days: float) -> pl.Expr:
    """``weight · 0.5^(age_days / half_life)``; events after the reference are not boosted.
    A half-life of 0 means no decay (a yearly export, ratings collected over decades)."""
    if half_life_days == 0:
        return pl.col("weight")
    age_days = (pl.lit(reference, dtype=pl.Datetime("us", "UTC")) - pl.col("ts")).dt.total_seconds() / 86_400.0
    decayed = pl.col("weight") * pl.lit(0.5).pow(age_days.clip(lower_bound=0.0) / half_life_days)
    return (
        pl.when(pl.col("weight") > 0).then(decayed.clip(lower_bound=MIN_DECAYED_WEIGHT)).otherwise(0.0)
    ).alias("weight")


def weighted_pairs(events: pl.LazyFrame, settings: EngineSettings, reference: datetime) -> pl.LazyFrame:
    """One row per (user_id, item_id): summed decayed weight and first/last time."""
    return (
        events.with_columns(action_weight(settings))
        .with_columns(decayed_weight(reference, settings.half_life_days))
        .group_by("user_id", "item_id")
        .agg(pl.col("weight").sum(), pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
        .filter(pl.col("weight") > 0)
    )


def positive_events(events: pl.LazyFrame, positive_actions: frozenset[str], high_rating: float) -> pl.LazyFrame:
    """Events that count as a positive outcome (evaluation truth)."""
    return events.filter(
        pl.col("action").is_in(sorted(positive_actions))
        | ((pl.col("action") == "rate") & (pl.col("value") >= high_rating))
    )
