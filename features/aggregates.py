"""Demand perception aggregates: who engages with what, where supply misses demand, what moves.

The planners' report (群众点菜) rests on three tables, each a polars lazy pipeline over the
store so that one ``collect_all`` at the edge of the job runs them together:

* ``preferences``: for a segment ``s`` (a region; region x age band; area type x age band) and
  a category ``c``, ``share(s, c)`` = active users of ``s`` who engaged with ``c`` / active
  users of ``s``, and ``lift(s, c) = share(s, c) / share(all, c)``.
* ``supply_demand``: per region, the action-weighted demand share of each category against the
  share of the region's live catalog in that category; ``gap = demand - supply``.
* ``trends``: ``share(s, c)`` in the window minus in the previous window of the same length,
  in percentage points.

Privacy: a cell resting on fewer than ``min_users`` distinct users carries no numbers (null
values, ``suppressed = True``); a segment with fewer active users is suppressed whole.
Category cells that add up to a published total (the districts' and the area x age
segments' to the city's, a district's age bands' to the district's) are protected against
differencing (:func:`_protect_by_complement`: when one is hidden, the next smallest are
too). The supply-demand table hides the demand side of exactly the district cells the
preference table hides, and the top-items table lists no item of a hidden district cell.
Not protected: a small segment's head count of active users (its siblings' and the total's
give it). The grids are built from the distinct values of each column (regions x age
bands, ...), never from who was active, so that even the presence of a row reveals nothing
about people. Hidden items are excluded from everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from features.events import action_weight, clean_events
from features.schemas import UTC_TIME
from recsys.settings import EngineSettings

SEGMENT_KEYS: tuple[str, ...] = ("region_code", "age_band", "area_type")
SEGMENT_TYPES: dict[str, tuple[str, ...]] = {
    "region": ("region_code",),
    "region_age": ("region_code", "age_band"),
    "area_age": ("area_type", "age_band"),
}
"""Each segment type and the user columns that define it (the others are null in its rows)."""

UNCATEGORIZED = "uncategorized"
"""Category given to items without one, so their interactions still count in denominators."""

UNDERSUPPLY_RATIO = 1.5
MIN_STATUS_SHARE = 0.05
"""A category is under/oversupplied when one share is >= 1.5x the other and >= 5%."""

NOW, PREV = "now", "prev"

PREFERENCE_COLUMNS: tuple[str, ...] = (
    "segment_type", *SEGMENT_KEYS, "category", "active_users", "engaged_users", "share",
    "city_share", "lift", "suppressed",
)
SUPPLY_DEMAND_COLUMNS: tuple[str, ...] = (
    "region_code", "category", "demand_share", "supply_share", "gap", "status", "demand_users",
    "supply_items", "suppressed",
)
TREND_COLUMNS: tuple[str, ...] = (
    "segment_type", *SEGMENT_KEYS, "category", "share_now", "share_prev", "change_pp", "suppressed",
)
TOP_ITEM_COLUMNS: tuple[str, ...] = ("region_code", "rank", "item_id", "title", "category", "users")

_SEGMENT_SORT = ["segment_type", *SEGMENT_KEYS, "category"]


@dataclass(frozen=True)
class ReportTables:
    """The collected report tables (every number already suppressed where required)."""

    bounds: pl.DataFrame
    preferences: pl.DataFrame
    supply_demand: pl.DataFrame
    trends: pl.DataFrame
    top_items: pl.DataFrame
    city: pl.DataFrame


@dataclass(frozen=True)
class ReportPlan:
    """The report's lazy pipelines; :meth:`collect` runs them all in one ``collect_all``."""

    bounds: pl.LazyFrame
    preferences: pl.LazyFrame
    supply_demand: pl.LazyFrame
    trends: pl.LazyFrame
    top_items: pl.LazyFrame
    city: pl.LazyFrame

    def collect(self) -> ReportTables:
        frames = pl.collect_all([
            self.bounds, self.preferences, self.supply_demand, self.trends, self.top_items, self.city,
        ])
        return ReportTables(*frames)


def plan_report(
    interactions: pl.LazyFrame,
    users: pl.LazyFrame,
    items: pl.LazyFrame,
    *,
    window_days: int = 28,
    min_users: int = 10,
    at: datetime | None = None,
    settings: EngineSettings | None = None,
    top_items_per_region: int = 5,
    now: datetime | None = None,
) -> ReportPlan:
    """Wire every report pipeline over the three stored tables (nothing is read yet).

    The window is ``(at - window_days, at]``; ``at`` defaults to the latest interaction time,
    so a report on historical data describes its last weeks rather than an empty present.
    The window never ends after ``now`` (default: the wall clock), see :func:`window_bounds`.
    """
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    if min_users < 1:
        raise ValueError("min_users must be at least 1")
    settings = settings or EngineSettings()
    users = users.unique(subset="user_id", keep="any")
    bounds = window_bounds(interactions, window_days=window_days, at=at, now=now)
    events = window_events(interactions, users, items, bounds, settings)
    cells = segment_cells(events, users, items, min_users=min_users).cache()
    districts_now = cells.filter((pl.col("segment_type") == "region") & (pl.col("period") == NOW))
    return ReportPlan(
        bounds=bounds,
        preferences=preferences(cells),
        supply_demand=supply_demand(events, users, items, bounds, min_users=min_users, hidden_cells=districts_now),
        trends=trends(cells),
        top_items=top_items(events, items, min_users=min_users, limit=top_items_per_region,
                            hidden_cells=districts_now),
        city=city_shares(events, items, min_users=min_users),
    )


def window_bounds(interactions: pl.LazyFrame, *, window_days: int, at: datetime | None,
                  now: datetime | None = None) -> pl.LazyFrame:
    """One row: ``window_end``, ``window_start`` and ``prev_start`` (start of the previous window).

    ``window_end`` is ``at``, or else the latest interaction at or before ``now`` (default: the
    wall clock), and never later than ``now``: one event dated in the future (``9999-12-31``
    from a provider's "no date") must not move the window to where nobody was active yet, nor
    past the last date a ``datetime`` can hold.
    """
    now = now or datetime.now(UTC)
    ceiling = pl.lit(now, dtype=UTC_TIME)
    if at is None:
        ts = pl.col("ts").cast(UTC_TIME)
        end = interactions.select(ts.filter(ts <= ceiling).max().alias("window_end"))
    else:
        end = pl.LazyFrame({"window_end": [min(at, now)]}, schema={"window_end": UTC_TIME})
    span = pl.duration(days=window_days)
    return end.select(
        pl.col("window_end").cast(UTC_TIME),
        (pl.col("window_end") - span).cast(UTC_TIME).alias("window_start"),
        (pl.col("window_end") - span * 2).cast(UTC_TIME).alias("prev_start"),
    )


def visible_items(items: pl.LazyFrame) -> pl.LazyFrame:
    """Catalog rows that are not hidden, with a category for every row."""
    return items.filter(~pl.col("hidden").fill_null(False)).with_columns(
        pl.col("category").fill_null(UNCATEGORIZED)
    )


def window_events(
    interactions: pl.LazyFrame,
    users: pl.LazyFrame,
    items: pl.LazyFrame,
    bounds: pl.LazyFrame,
    settings: EngineSettings,
) -> pl.LazyFrame:
    """Interactions in this or the previous window on visible items, with user attributes.

    The same cleaning and action weights as training (:mod:`features.events`): exact
    duplicates count once, hidden items not at all.

    Columns: period ('now' | 'prev'), user_id, item_id, category, weight, region_code,
    age_band, area_type (user attributes may be null).
    """
    catalog = visible_items(items).select("item_id", "category")
    people = users.select("user_id", *SEGMENT_KEYS)
    return (
        clean_events(interactions, items)
        .join(bounds, how="cross")
        .filter((pl.col("ts") > pl.col("prev_start")) & (pl.col("ts") <= pl.col("window_end")))
        .with_columns(
            pl.when(pl.col("ts") > pl.col("window_start")).then(pl.lit(NOW)).otherwise(pl.lit(PREV))
            .alias("period"),
            action_weight(settings),
        )
        .join(catalog, on="item_id", how="inner")
        .join(people, on="user_id", how="left")
        .select("period", "user_id", "item_id", "category", "weight", *SEGMENT_KEYS)
        # Every table reads these rows; without the cache the optimiser pushes each table's
        # filters down and rebuilds the join once per branch.
        .cache()
    )


def _as_segment(frame: pl.LazyFrame, segment_type: str) -> pl.LazyFrame:
    """Rows of ``frame`` that belong to a segment of this type, other segment keys nulled."""
    keys = SEGMENT_TYPES[segment_type]
    return frame.filter(pl.all_horizontal([pl.col(k).is_not_null() for k in keys])).with_columns(
        pl.lit(segment_type).alias("segment_type"), *_missing_keys(segment_type)
    )


def _all_segments(frame: pl.LazyFrame, columns: list[str]) -> pl.LazyFrame:
    """``frame`` once per segment type, stacked (a user appears in up to three segments)."""
    parts = [_as_segment(frame, kind).select("segment_type", *SEGMENT_KEYS, *columns) for kind in SEGMENT_TYPES]
    return pl.concat(parts, how="vertical")


def _distinct(users: pl.LazyFrame, column: str) -> pl.LazyFrame:
    return users.select(pl.col(column)).drop_nulls().unique()


def segment_universe(users: pl.LazyFrame) -> pl.LazyFrame:
    """Every segment as the cross product of each column's distinct values.

    Built from distinct values rather than from observed combinations, so a listed
    segment (even a suppressed one) does not reveal that anybody belongs to it.
    """
    regions, ages, areas = (_distinct(users, c) for c in SEGMENT_KEYS)
    parts = {
        "region": regions,
        "region_age": regions.join(ages, how="cross"),
        "area_age": areas.join(ages, how="cross"),
    }
    return pl.concat(
        [_as_segment(frame.with_columns(_missing_keys(kind)), kind).select("segment_type", *SEGMENT_KEYS)
         for kind, frame in parts.items()],
        how="vertical",
    )


def _missing_keys(segment_type: str) -> list[pl.Expr]:
    """The keys a segment type does not use, as null strings."""
    return [pl.lit(None, dtype=pl.String).alias(k) for k in SEGMENT_KEYS if k not in SEGMENT_TYPES[segment_type]]


def categories(items: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct categories of the visible catalog."""
    return visible_items(items).select("category").unique()


def segment_cells(
    events: pl.LazyFrame, users: pl.LazyFrame, items: pl.LazyFrame, *, min_users: int
) -> pl.LazyFrame:
    """Share, city share and lift of every segment x category x period, suppressed.

    A row is suppressed (all its numbers null) when the segment has fewer than
    ``min_users`` active users or fewer than ``min_users`` of them engaged with the category.
    """
    pairs = events.select("period", "user_id", "category", *SEGMENT_KEYS).unique().cache()
    actives = pairs.select("period", "user_id", *SEGMENT_KEYS).unique().cache()
    keys = ["segment_type", *SEGMENT_KEYS]
    active = _all_segments(actives, ["period"]).group_by("period", *keys).agg(
        pl.len().cast(pl.Int64).alias("active_users")
    )
    engaged = _all_segments(pairs, ["period", "category"]).group_by("period", *keys, "category").agg(
        pl.len().cast(pl.Int64).alias("engaged_users")
    )
    city = _city_counts(pairs, actives)
    periods = pl.LazyFrame({"period": [NOW, PREV]})
    grid = segment_universe(users).join(categories(items), how="cross").join(periods, how="cross")
    cells = (
        grid.join(active, on=["period", *keys], how="left", nulls_equal=True)
        .join(engaged, on=["period", *keys, "category"], how="left", nulls_equal=True)
        .join(city, on=["period", "category"], how="left")
        .with_columns(pl.col("active_users", "engaged_users", "city_active", "city_engaged").fill_null(0))
    )
    return _shares_and_lift(cells, min_users)


def _city_counts(pairs: pl.LazyFrame, actives: pl.LazyFrame) -> pl.LazyFrame:
    """Active users of the whole city and engaged users per category, per period."""
    city_active = actives.group_by("period").agg(pl.col("user_id").n_unique().cast(pl.Int64).alias("city_active"))
    city_engaged = pairs.group_by("period", "category").agg(pl.len().cast(pl.Int64).alias("city_engaged"))
    return city_engaged.join(city_active, on="period", how="left")


def _ratio(numerator: str, denominator: str) -> pl.Expr:
    return pl.when(pl.col(denominator) > 0).then(pl.col(numerator) / pl.col(denominator))


def _shares_and_lift(cells: pl.LazyFrame, min_users: int) -> pl.LazyFrame:
    primary = (
        (pl.col("active_users") < min_users)
        | (pl.col("engaged_users") < min_users)
        | (pl.col("city_engaged") < min_users)
    )
    # Only what people did (engaged users per category) is protected against differencing;
    # the active-user count of a small segment stays derivable from its siblings (a head
    # count by place and age, not behaviour), which keeps small districts' other cells shown.
    flagged = _protect_by_complement(cells.with_columns(primary.alias("suppressed")), "engaged_users",
                                     "suppressed", min_users, by=["category"])
    computed = flagged.with_columns(
        _ratio("engaged_users", "active_users").alias("share"),
        _ratio("city_engaged", "city_active").alias("city_share"),
    ).with_columns((pl.col("share") / pl.col("city_share")).alias("lift"))
    numbers = ["active_users", "engaged_users", "share", "city_share", "lift"]
    return computed.with_columns(
        [pl.when(~pl.col("suppressed")).then(pl.col(n)).alias(n) for n in numbers]
    )


def _protect_by_complement(frame: pl.LazyFrame, count: str, hidden: str, min_users: int,
                           by: list[str] | None = None) -> pl.LazyFrame:
    """Secondary suppression: hidden rows cannot be recovered by subtracting shown ones from a total.

    The rows of one segment type add up to a published total: the districts and the area x
    age segments to the city's row (:func:`city_shares`), a district's age bands to the
    district's row. Hiding one of them is not enough, or the total minus the others gives it
    away. So within each such group (per period, and per ``by`` columns), when the hidden rows
    hold anybody, the smallest shown rows are hidden too until at least two are hidden and
    they hold ``min_users`` or more together (or none is left). Hidden rows that hold nobody
    reveal nobody and need no company.
    """
    parent = pl.when(pl.col("segment_type") == "region_age").then(pl.col("region_code")).otherwise(pl.lit(""))
    groups = ["segment_type", "period", "_total", *(by or [])]
    shown = ~pl.col(hidden)
    hidden_rows = pl.col(hidden).sum().over(groups)
    hidden_users = pl.when(pl.col(hidden)).then(pl.col(count)).otherwise(0).sum().over(groups)
    shown_users = pl.when(shown).then(pl.col(count)).otherwise(0)
    shown_before = shown_users.cum_sum().over(groups) - shown_users  # smaller shown rows, in sort order
    rank = shown.cast(pl.Int64).cum_sum().over(groups) - 1
    needed = shown & (hidden_users > 0) & ((hidden_rows + rank < 2) | (hidden_users + shown_before < min_users))
    return (
        frame.with_columns(parent.alias("_total"))
        .sort([*groups, count, *SEGMENT_KEYS], nulls_last=True)
        .with_columns((pl.col(hidden) | needed).alias(hidden))
        .drop("_total")
    )


def preferences(cells: pl.LazyFrame) -> pl.LazyFrame:
    """The current window's cells (columns :data:`PREFERENCE_COLUMNS`)."""
    return cells.filter(pl.col("period") == NOW).select(PREFERENCE_COLUMNS).sort(_SEGMENT_SORT, nulls_last=False)


def trends(cells: pl.LazyFrame) -> pl.LazyFrame:
    """Change of share against the previous window, in percentage points.

    Suppressed when either window's cell is suppressed: a change computed from a hidden
    share would reveal it.
    """
    keys = ["segment_type", *SEGMENT_KEYS, "category"]
    now = cells.filter(pl.col("period") == NOW).select(*keys, pl.col("share").alias("share_now"),
                                                       pl.col("suppressed").alias("sup_now"))
    prev = cells.filter(pl.col("period") == PREV).select(*keys, pl.col("share").alias("share_prev"),
                                                         pl.col("suppressed").alias("sup_prev"))
    joined = now.join(prev, on=keys, how="left", nulls_equal=True).with_columns(
        (pl.col("sup_now") | pl.col("sup_prev").fill_null(True)).alias("suppressed")
    )
    numbers = ["share_now", "share_prev"]
    return (
        joined.with_columns([pl.when(~pl.col("suppressed")).then(pl.col(n)).alias(n) for n in numbers])
        .with_columns(((pl.col("share_now") - pl.col("share_prev")) * 100.0).alias("change_pp"))
        .select(TREND_COLUMNS)
        .sort(_SEGMENT_SORT, nulls_last=False)
    )


def live_items(items: pl.LazyFrame, bounds: pl.LazyFrame) -> pl.LazyFrame:
    """Visible items located in a region and live at some point of the window.

    Live: ``starts_at <= window_end`` and (``ends_at`` null or ``>= window_start``); an item
    without a start time (a library's standing collection) counts as live.
    """
    started = pl.col("starts_at").is_null() | (pl.col("starts_at") <= pl.col("window_end"))
    not_over = pl.col("ends_at").is_null() | (pl.col("ends_at") >= pl.col("window_start"))
    return (
        visible_items(items).filter(pl.col("region_code").is_not_null())
        .join(bounds, how="cross")
        .filter(started & not_over)
        .select("item_id", "region_code", "category")
    )


def supply_demand(
    events: pl.LazyFrame,
    users: pl.LazyFrame,
    items: pl.LazyFrame,
    bounds: pl.LazyFrame,
    *,
    min_users: int,
    hidden_cells: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Demand share vs supply share per region x category (columns :data:`SUPPLY_DEMAND_COLUMNS`).

    Supply counts describe the catalog, not people, so they stay visible when the demand
    side of a cell is suppressed; demand share, gap, status and demand users do not.
    ``hidden_cells`` (region_code, category, suppressed) are the preference table's current
    district cells, which count the same people: a cell hidden there, also to protect a
    neighbour (:func:`_protect_by_complement`), is hidden here too.
    """
    local = events.filter((pl.col("period") == NOW) & pl.col("region_code").is_not_null())
    demand = local.group_by("region_code", "category").agg(
        pl.col("weight").sum().alias("demand_weight"),
        pl.col("user_id").n_unique().cast(pl.Int64).alias("demand_users"),
    )
    region_demand = local.group_by("region_code").agg(
        pl.col("weight").sum().alias("region_weight"),
        pl.col("user_id").n_unique().cast(pl.Int64).alias("region_users"),
    )
    supply = live_items(items, bounds).group_by("region_code", "category").agg(
        pl.len().cast(pl.Int64).alias("supply_items")
    )
    regions = pl.concat(
        [_distinct(users, "region_code"), visible_items(items).select("region_code").drop_nulls().unique()],
        how="vertical",
    ).unique()
    grid = regions.join(categories(items), how="cross")
    cells = (
        grid.join(demand, on=["region_code", "category"], how="left")
        .join(supply, on=["region_code", "category"], how="left")
        .join(region_demand, on="region_code", how="left")
        .with_columns(pl.col("demand_weight", "demand_users", "supply_items", "region_weight", "region_users")
                      .fill_null(0))
        .with_columns(pl.col("supply_items").sum().over("region_code").alias("region_items"))
        .with_columns(
            _ratio("demand_weight", "region_weight").fill_null(0.0).alias("demand_share"),
            # A region without located items supplies nothing: p = 0, so demand there is unmet.
            _ratio("supply_items", "region_items").fill_null(0.0).alias("supply_share"),
        )
        .with_columns((pl.col("demand_share") - pl.col("supply_share")).alias("gap"), _status())
    )
    suppressed = (pl.col("region_users") < min_users) | (pl.col("demand_users") < min_users)
    if hidden_cells is not None:
        flags = hidden_cells.select("region_code", "category", pl.col("suppressed").alias("hidden_there"))
        cells = cells.join(flags, on=["region_code", "category"], how="left")
        suppressed = suppressed | pl.col("hidden_there").fill_null(False)
    hidden = ["demand_share", "gap", "status", "demand_users"]
    return (
        cells.with_columns(suppressed.alias("suppressed"))
        .with_columns([pl.when(~pl.col("suppressed")).then(pl.col(n)).alias(n) for n in hidden])
        .select(SUPPLY_DEMAND_COLUMNS)
        .sort("region_code", "category")
    )


def _status() -> pl.Expr:
    d, p = pl.col("demand_share"), pl.col("supply_share")
    return (
        pl.when((d >= UNDERSUPPLY_RATIO * p) & (d >= MIN_STATUS_SHARE)).then(pl.lit("undersupplied"))
        .when((p >= UNDERSUPPLY_RATIO * d) & (p >= MIN_STATUS_SHARE)).then(pl.lit("oversupplied"))
        .otherwise(pl.lit("balanced"))
        .alias("status")
    )


def top_items(events: pl.LazyFrame, items: pl.LazyFrame, *, min_users: int, limit: int,
              hidden_cells: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Each region's most engaged items in the window, by distinct users.

    Only items engaged by at least ``min_users`` users of the region are listed, so a
    listed count never rests on fewer people than any other published number. With
    ``hidden_cells`` (region_code, category, suppressed: the preference table's current
    district cells), no item of a hidden cell is listed either: an item's count bounds its
    category's, and is its category's when the category has one item.
    """
    titles = visible_items(items).select("item_id", "title")
    counted = (
        events.filter((pl.col("period") == NOW) & pl.col("region_code").is_not_null())
        .group_by("region_code", "item_id", "category")
        .agg(pl.col("user_id").n_unique().cast(pl.Int64).alias("users"))
        .filter(pl.col("users") >= min_users)
    )
    if hidden_cells is not None:
        shown = hidden_cells.filter(~pl.col("suppressed")).select("region_code", "category")
        counted = counted.join(shown, on=["region_code", "category"], how="semi")
    return (
        counted
        .sort(["region_code", "users", "item_id"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("region_code").alias("rank"))
        .filter(pl.col("rank") <= limit)
        .join(titles, on="item_id", how="left")
        .select(TOP_ITEM_COLUMNS)
        .sort("region_code", "rank")
    )


def city_shares(events: pl.LazyFrame, items: pl.LazyFrame, *, min_users: int) -> pl.LazyFrame:
    """The whole city per period and category: active users, engaged users, share.

    Columns: period, category, active_users, engaged_users, share, suppressed (numbers null
    when the category rests on fewer than ``min_users`` users).
    """
    pairs = events.select("period", "user_id", "category").unique()
    counts = _city_counts(pairs, events.select("period", "user_id").unique())
    periods = pl.LazyFrame({"period": [NOW, PREV]})
    cells = (
        categories(items).join(periods, how="cross")
        .join(counts, on=["period", "category"], how="left")
        .with_columns(pl.col("city_engaged").fill_null(0))
        .with_columns(pl.col("city_active").fill_null(0).max().over("period"))
        .select("period", "category", pl.col("city_active").alias("active_users"),
                pl.col("city_engaged").alias("engaged_users"))
        .with_columns(_ratio("engaged_users", "active_users").alias("share"))
        .with_columns(((pl.col("active_users") < min_users) | (pl.col("engaged_users") < min_users))
                      .alias("suppressed"))
    )
    numbers = ["active_users", "engaged_users", "share"]
    return cells.with_columns(
        [pl.when(~pl.col("suppressed")).then(pl.col(n)).alias(n) for n in numbers]
    ).sort("period", "category")
