"""Online metrics: what served lists did in front of residents, per model version x variant x segment x day.

Inputs are the stored exposure records (:mod:`features.ingest.exposures`), the stored
interactions (posted lines count once ``recsys ingest`` folded them) and the users and items
tables. Every list is one row of :func:`list_outcomes`: its slots, the slots shown, its
impressions and the clicks, reservations and attendances attributed to it by
:func:`recsys.attribution.attribute`. :func:`online_metrics` sums those rows per cell:

* ``lists``, ``impressions`` (impression events naming the list), ``shown`` (slots counted as
  displayed: the list's impressions, or all its slots when the app posts none for it and
  ``lists_count_as_shown``);
* ``click_through`` = attributed clicks / shown slots;
* ``reservations_per_1000`` and ``attendance_per_1000`` lists;
* ``catalogue_share``: distinct items listed / visible items of the catalogue;
* ``rural_slot_share``: slots holding an item of a rural district (a district where at least
  half the users are rural, as the exposure floors define it) / slots;
* ``fallback_rate`` and ``empty_rate`` of the lists.

Segments: ``all``, and the list's user by ``area_type``, ``age_band`` and ``district``
(their ``region_code``; a district's list is in that district); a list served to no known
user (a similar-item list, an unknown user) is in segment ``unknown`` of each type. Days are the UTC date of serving.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import polars as pl

from recsys.attribution import SEGMENT_TYPES, AttributionSettings, Interaction, ServedList, attribute

log = logging.getLogger(__name__)

ATTRIBUTED = ("click", "reserve", "attend")
"""The actions credited to lists (the rest of the store is no outcome of a list)."""

SEGMENT_COLUMNS = {segment_type: segment_type for segment_type in SEGMENT_TYPES}
"""Segment type -> the column of :func:`list_outcomes` it groups by."""

CELL = ["model_version", "variant", "segment_type", "segment", "day"]
"""The key of one metrics row."""

UNKNOWN = "unknown"

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "recommendation_id": pl.String(), "clicks": pl.Int64(), "reserves": pl.Int64(), "attends": pl.Int64(),
}


def attributed_outcomes(exposures: pl.DataFrame, interactions: pl.DataFrame,
                        settings: AttributionSettings | None = None) -> pl.DataFrame:
    """Per list: the clicks, reservations and attendances attributed to it (lists with none left out)."""
    personal = exposures.filter(pl.col("user_id").is_not_null())
    lists = [ServedList(r["recommendation_id"], r["user_id"], r["ts"].timestamp(), tuple(r["items"] or ()))
             for r in personal.select("recommendation_id", "user_id", "ts", "items").iter_rows(named=True)]
    events_frame = interactions.filter(pl.col("action").is_in(ATTRIBUTED)).sort("ts")
    events = [Interaction(r["user_id"], r["item_id"], r["action"], r["ts"].timestamp(), r.get("recommendation_id"))
              for r in events_frame.iter_rows(named=True)]
    credited = attribute(lists, events, settings)
    rows = pl.DataFrame({"recommendation_id": credited, "action": [e.action for e in events]},
                        schema={"recommendation_id": pl.String(), "action": pl.String()})
    rows = rows.drop_nulls("recommendation_id")
    if rows.is_empty():
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    return rows.group_by("recommendation_id").agg(
        (pl.col("action") == "click").sum().cast(pl.Int64).alias("clicks"),
        (pl.col("action") == "reserve").sum().cast(pl.Int64).alias("reserves"),
        (pl.col("action") == "attend").sum().cast(pl.Int64).alias("attends"),
    )


def impressions_per_list(exposures: pl.DataFrame, interactions: pl.DataFrame) -> pl.DataFrame:
    """Per list: distinct items with an impression naming it, by the list's own user (or any, for lists
    without a user)."""
    shown = (interactions.filter((pl.col("action") == "impression") & pl.col("recommendation_id").is_not_null())
             .select("recommendation_id", pl.col("user_id").alias("__by"), "item_id"))
    joined = exposures.select("recommendation_id", "user_id").join(shown, on="recommendation_id")
    own = joined.filter(pl.col("user_id").is_null() | (pl.col("user_id") == pl.col("__by")))
    return own.group_by("recommendation_id").agg(pl.col("item_id").n_unique().cast(pl.Int64).alias("impressions"))


def rural_regions(users: pl.DataFrame) -> list[str]:
    """Districts where at least half the users are rural (as :func:`recsys.exposure.majority_regions`)."""
    if users.is_empty():
        return []
    shares = users.drop_nulls("region_code").group_by("region_code").agg(
        (pl.col("area_type") == "rural").mean().alias("share"))
    return sorted(shares.filter(pl.col("share") >= 0.5)["region_code"].to_list())


def list_outcomes(exposures: pl.DataFrame, interactions: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame,
                  settings: AttributionSettings | None = None) -> pl.DataFrame:
    """One row per served list: its cell keys, slot counts and attributed outcomes."""
    settings = settings or AttributionSettings()
    rural = set(rural_regions(users))
    item_region = dict(zip(items["item_id"].to_list(), items["region_code"].to_list(), strict=True))
    rural_items = [i for i, region in item_region.items() if region in rural]
    frame = exposures.with_columns(
        pl.col("items").list.len().cast(pl.Int64).alias("slots"),
        pl.col("items").list.eval(pl.element().is_in(rural_items)).list.sum().cast(pl.Int64).alias("rural_slots"),
        pl.col("ts").dt.date().alias("day"),
    )
    frame = (frame.join(impressions_per_list(exposures, interactions), on="recommendation_id", how="left")
             .join(attributed_outcomes(exposures, interactions, settings), on="recommendation_id", how="left")
             .join(users.select("user_id", "area_type", "age_band", pl.col("region_code").alias("district")),
                   on="user_id", how="left")
             # a district's list belongs to that district
             .with_columns(pl.coalesce("district", "region_code").alias("district")))
    counted = pl.col("slots") if settings.lists_count_as_shown else pl.lit(0, pl.Int64)
    return frame.with_columns(
        pl.col("impressions").fill_null(0),
        pl.col("clicks").fill_null(0), pl.col("reserves").fill_null(0), pl.col("attends").fill_null(0),
        pl.when(pl.col("impressions").fill_null(0) > 0).then(pl.col("impressions")).otherwise(counted).alias("shown"),
    )


def _with_segments(outcomes: pl.DataFrame) -> pl.DataFrame:
    parts = [outcomes.with_columns(pl.lit("all").alias("segment_type"), pl.lit("all").alias("segment"))]
    for segment_type, column in SEGMENT_COLUMNS.items():
        parts.append(outcomes.with_columns(pl.lit(segment_type).alias("segment_type"),
                                           pl.col(column).fill_null(UNKNOWN).alias("segment")))
    return pl.concat(parts, how="vertical")


def online_metrics(outcomes: pl.DataFrame, catalogue_size: int) -> pl.DataFrame:
    """The metrics table: one row per :data:`CELL`, sorted."""
    rows = _with_segments(outcomes).group_by(CELL).agg(
        pl.len().cast(pl.Int64).alias("lists"),
        pl.col("impressions").sum().alias("impressions"),
        pl.col("shown").sum().alias("shown"),
        pl.col("slots").sum().alias("slots"),
        pl.col("clicks").sum().alias("clicks"),
        pl.col("reserves").sum().alias("reservations"),
        pl.col("attends").sum().alias("attendances"),
        pl.col("rural_slots").sum().alias("rural_slots"),
        pl.col("items").list.explode(keep_nulls=False, empty_as_null=False).n_unique().alias("distinct_items"),
        pl.col("fallback").is_not_null().sum().alias("fallbacks"),
        (pl.col("slots") == 0).sum().alias("empty_lists"),
    )
    return with_rates(rows, catalogue_size).sort(CELL)


def with_rates(rows: pl.DataFrame, catalogue_size: int) -> pl.DataFrame:
    """The ratio columns of summed counts (null where the denominator is 0)."""
    def ratio(num: pl.Expr, den: str) -> pl.Expr:
        return pl.when(pl.col(den) > 0).then(num / pl.col(den)).otherwise(None)

    return rows.with_columns(
        ratio(pl.col("clicks").cast(pl.Float64), "shown").alias("click_through"),
        ratio(pl.col("reservations") * 1000.0, "lists").alias("reservations_per_1000"),
        ratio(pl.col("attendances") * 1000.0, "lists").alias("attendance_per_1000"),
        (pl.col("distinct_items") / catalogue_size if catalogue_size else pl.lit(None, pl.Float64))
        .alias("catalogue_share"),
        ratio(pl.col("rural_slots").cast(pl.Float64), "slots").alias("rural_slot_share"),
        ratio(pl.col("fallbacks").cast(pl.Float64), "lists").alias("fallback_rate"),
        ratio(pl.col("empty_lists").cast(pl.Float64), "lists").alias("empty_rate"),
    )


def per_user(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Per variant x user (personal lists only): lists, shown slots and outcomes, the A/B test's units."""
    return (outcomes.filter(pl.col("user_id").is_not_null())
            .group_by("variant", "user_id", "area_type")
            .agg(pl.len().cast(pl.Int64).alias("lists"), pl.col("shown").sum(), pl.col("clicks").sum(),
                 pl.col("reserves").sum(), pl.col("attends").sum(), (pl.col("slots") == 0).sum().alias("empty"))
            .sort("variant", "user_id"))


def window(exposures: pl.DataFrame, days: int, end: date | None = None) -> pl.DataFrame:
    """The lists served in the ``days`` UTC days ending with ``end`` (default: the last day with a list)."""
    if exposures.is_empty():
        return exposures
    last = end or exposures["ts"].max().date()  # type: ignore[union-attr]
    start = datetime.combine(last - timedelta(days=days - 1), datetime.min.time()).date()
    return exposures.filter(pl.col("ts").dt.date().is_between(start, last))
