"""Depth for the planners' report: supply in listings, sessions and seats by channel, and gaps by age band.

Two lazy tables over the store and the report's window (:func:`features.aggregates.window_bounds`):

* ``supply``: per channel x district x category, what was live in the window. ``listings`` are
  distinct programmes (items sharing a ``series_id`` are sessions of one listing; an item
  without one is its own listing), ``sessions`` are items (an evening, a screening, an
  exhibition run) and ``seats`` the summed ``capacity`` of the sessions that state one. The
  ``offline`` channel holds located items; the ``digital`` channel holds items without a
  district or of kind ``digital`` (city-wide, ``region_code`` null, no seats). Menu
  programmes (kind ``programme``) are offers to book, not supply, and are left out.
* ``age_gaps``: per district x age band x category, the band's demand share (its residents'
  action-weighted interactions in the category / all of theirs) against the district's
  offline supply share by listings (as ``supply_demand``), so a district that over-supplies a
  category overall can still show that one age band lacks it.

Privacy: supply describes the catalogue, not people, and is never suppressed. An age-band
cell carries no demand numbers when the band has fewer than ``min_users`` active residents,
fewer than ``min_users`` of them engaged with the category, or the preference table hides the
same district x band x category cell (its differencing protection included).
"""

from __future__ import annotations

import logging

import polars as pl

from features.aggregates import NOW, visible_items
from features.aggregates import _status as status_rule  # one rule for districts and their age bands

log = logging.getLogger(__name__)

DIGITAL_KIND = "digital"
PROGRAMME_KIND = "programme"
OFFLINE, DIGITAL = "offline", "digital"
SUPPLY_COLUMNS: tuple[str, ...] = ("channel", "region_code", "category", "listings", "sessions", "seats")
AGE_GAP_COLUMNS: tuple[str, ...] = (
    "region_code", "age_band", "category", "demand_share", "supply_share", "gap", "status", "suppressed",
)


def live_supply(items: pl.LazyFrame, bounds: pl.LazyFrame) -> pl.LazyFrame:
    """Visible items live at some point of the window, with their channel and listing key.

    Live as in :func:`features.aggregates.live_items`: started by the window's end and not
    ended before its start (no start time = standing, no end time = open).
    """
    columns = items.collect_schema().names()
    listing = pl.coalesce("series_id", "item_id") if "series_id" in columns else pl.col("item_id")
    kind = pl.col("kind").fill_null("")
    digital = (kind == DIGITAL_KIND) | pl.col("region_code").is_null()
    started = pl.col("starts_at").is_null() | (pl.col("starts_at") <= pl.col("window_end"))
    not_over = pl.col("ends_at").is_null() | (pl.col("ends_at") >= pl.col("window_start"))
    return (
        visible_items(items).filter(kind != PROGRAMME_KIND)
        .join(bounds, how="cross").filter(started & not_over)
        .select(
            pl.when(digital).then(pl.lit(DIGITAL)).otherwise(pl.lit(OFFLINE)).alias("channel"),
            pl.when(digital).then(None).otherwise(pl.col("region_code")).alias("region_code"),
            "category", listing.alias("listing"), "item_id", pl.col("capacity").cast(pl.Int64),
        )
    )


def supply(items: pl.LazyFrame, bounds: pl.LazyFrame) -> pl.LazyFrame:
    """Listings, sessions and seats per channel x district x category (columns :data:`SUPPLY_COLUMNS`)."""
    return (
        live_supply(items, bounds)
        .group_by("channel", "region_code", "category")
        .agg(
            pl.col("listing").n_unique().cast(pl.Int64).alias("listings"),
            pl.col("item_id").n_unique().cast(pl.Int64).alias("sessions"),
            # a digital item has no seats; an offline one without a stated capacity adds none
            pl.when(pl.col("capacity").is_not_null().any()).then(pl.col("capacity").sum()).alias("seats"),
        )
        .with_columns(pl.when(pl.col("channel") == OFFLINE).then(pl.col("seats")).alias("seats"))
        .select(SUPPLY_COLUMNS)
        .sort("channel", "region_code", "category", nulls_last=True)
    )


def age_gaps(events: pl.LazyFrame, users: pl.LazyFrame, items: pl.LazyFrame, bounds: pl.LazyFrame, *,
             min_users: int, hidden_cells: pl.LazyFrame) -> pl.LazyFrame:
    """Each district's age bands: demand share against the district's offline supply share.

    ``events`` are :func:`features.aggregates.window_events`; ``hidden_cells`` (region_code,
    age_band, category, suppressed) are the preference table's district x band cells.
    """
    local = events.filter((pl.col("period") == NOW) & pl.col("region_code").is_not_null()
                          & pl.col("age_band").is_not_null())
    demand = local.group_by("region_code", "age_band", "category").agg(
        pl.col("weight").sum().alias("demand_weight"),
        pl.col("user_id").n_unique().cast(pl.Int64).alias("demand_users"),
    )
    band = local.group_by("region_code", "age_band").agg(
        pl.col("weight").sum().alias("band_weight"),
        pl.col("user_id").n_unique().cast(pl.Int64).alias("band_users"),
    )
    offline = live_supply(items, bounds).filter(pl.col("channel") == OFFLINE)
    listed = offline.group_by("region_code", "category").agg(pl.col("listing").n_unique().alias("listings"))
    regions = users.select("region_code").drop_nulls().unique()
    ages = users.select("age_band").drop_nulls().unique()
    grid = regions.join(ages, how="cross").join(visible_items(items).select("category").unique(), how="cross")
    flags = hidden_cells.select("region_code", "age_band", "category", pl.col("suppressed").alias("hidden_there"))
    cells = (
        grid.join(demand, on=["region_code", "age_band", "category"], how="left")
        .join(band, on=["region_code", "age_band"], how="left")
        .join(listed, on=["region_code", "category"], how="left")
        .join(flags, on=["region_code", "age_band", "category"], how="left")
        .with_columns(pl.col("demand_weight", "demand_users", "band_weight", "band_users", "listings").fill_null(0))
        .with_columns(pl.col("listings").sum().over("region_code", "age_band").alias("region_listings"))
        .with_columns(
            _share("demand_weight", "band_weight").alias("demand_share"),
            _share("listings", "region_listings").alias("supply_share"),
        )
        .with_columns((pl.col("demand_share") - pl.col("supply_share")).alias("gap"), status_rule())
    )
    hidden = ((pl.col("band_users") < min_users) | (pl.col("demand_users") < min_users)
              | pl.col("hidden_there").fill_null(True))
    return (
        cells.with_columns(hidden.alias("suppressed"))
        .with_columns([pl.when(~pl.col("suppressed")).then(pl.col(n)).alias(n)
                       for n in ("demand_share", "gap", "status")])
        .select(AGE_GAP_COLUMNS)
        .sort("region_code", "age_band", "category")
    )


def _share(numerator: str, denominator: str) -> pl.Expr:
    return pl.when(pl.col(denominator) > 0).then(pl.col(numerator) / pl.col(denominator)).otherwise(0.0)
