"""What residents asked for (点单), next to what they did and what was on offer, per district.

Three tables for the planners' report, from the requests made in the report's window
(``(window_start, window_end]``) by users not erased:

* ``request_demand``: per district x category, ``requesters`` (distinct residents asking for
  the category, or for a menu programme of it), ``engaged_users`` (distinct residents of the
  district who engaged with the category in the window: behaviour), ``supply_items`` (items
  of the category located in the district and live in the window), and
  ``asked_not_offered`` (requesters shown and no supply), ranked per district by requesters;
* ``requested_programmes``: per district, the menu programmes (kind ``programme``) asked for
  most, by distinct requesters;
* ``request_answers``: per district, requests made, requests answered (an item answering it
  exists: :func:`recsys.requests.status_of`) and the median days from a request to its answer.

Privacy: like every other report table, a count resting on fewer than ``min_users`` distinct
residents is null (``suppressed``); a programme is listed only with at least ``min_users``
requesters; a district's answer figures are shown only when ``min_users`` residents asked.
The requesters of different categories are not published as a district total, so no hidden
cell comes back by subtraction.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from features.aggregates import live_items, visible_items
from features.dataset import catalog_from_frame
from recsys.requests import PROGRAMME, Request, district_centres, status_of

log = logging.getLogger(__name__)

DEMAND_COLUMNS: tuple[str, ...] = (
    "region_code", "category", "requesters", "engaged_users", "supply_items", "asked_not_offered", "rank",
    "suppressed",
)
PROGRAMME_COLUMNS: tuple[str, ...] = ("region_code", "rank", "item_id", "title", "category", "requesters")
ANSWER_COLUMNS: tuple[str, ...] = ("region_code", "requests", "answered", "median_days_to_answer", "suppressed")


@dataclass(frozen=True)
class RequestTables:
    demand: pl.DataFrame
    programmes: pl.DataFrame
    answers: pl.DataFrame


def request_tables(requests: pl.DataFrame, items: pl.DataFrame, preferences: pl.DataFrame,
                   bounds: dict[str, datetime], *, min_users: int, programmes_per_region: int = 5) -> RequestTables:
    """The three tables (module docstring) from the stored requests, the catalogue and the report's
    preference cells (whose district engaged-user counts are already suppressed where required)."""
    start, end = bounds["window_start"], bounds["window_end"]
    asked = requests.filter((pl.col("ts") > start) & (pl.col("ts") <= end))
    asked = _with_categories(asked, items)
    return RequestTables(
        demand=_demand(asked, items, preferences, bounds, min_users),
        programmes=_programmes(asked, items, min_users, programmes_per_region),
        answers=_answers(asked, items, end, min_users),
    )


def _with_categories(asked: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Each request's category: its own, or its programme's."""
    programmes = items.select("item_id", pl.col("category").alias("programme_category"))
    return asked.join(programmes, on="item_id", how="left").with_columns(
        pl.coalesce("category", "programme_category").alias("category")).drop("programme_category")


def _demand(asked: pl.DataFrame, items: pl.DataFrame, preferences: pl.DataFrame, bounds: dict[str, datetime],
            min_users: int) -> pl.DataFrame:
    requesters = (asked.filter(pl.col("category").is_not_null())
                  .group_by("region_code", "category").agg(pl.col("user_id").n_unique().alias("requesters")))
    engaged = preferences.filter(pl.col("segment_type") == "region").select("region_code", "category",
                                                                            "engaged_users")
    window = pl.LazyFrame({k: [v] for k, v in bounds.items()})
    offline = items.lazy().filter(pl.col("kind") != PROGRAMME)
    supply = (live_items(offline, window).group_by("region_code", "category")
              .agg(pl.len().alias("supply_items")).collect())
    table = (requesters.join(engaged, on=["region_code", "category"], how="left")
             .join(supply, on=["region_code", "category"], how="left")
             .with_columns(pl.col("supply_items").fill_null(0).cast(pl.Int64),
                           pl.col("requesters", "engaged_users").cast(pl.Int64)))
    suppressed = pl.col("requesters") < min_users
    table = table.with_columns(
        suppressed.alias("suppressed"),
        pl.when(suppressed).then(None).otherwise(pl.col("requesters")).alias("requesters"),
    ).with_columns((~pl.col("suppressed") & (pl.col("supply_items") == 0)).alias("asked_not_offered"))
    ranked = table.sort(["region_code", "asked_not_offered", "requesters", "category"],
                        descending=[False, True, True, False], nulls_last=True)
    return ranked.with_columns(pl.int_range(1, pl.len() + 1).over("region_code").alias("rank")).select(DEMAND_COLUMNS)


def _programmes(asked: pl.DataFrame, items: pl.DataFrame, min_users: int, limit: int) -> pl.DataFrame:
    menu = items.filter(pl.col("kind") == PROGRAMME).select("item_id", "title")
    counted = (asked.filter(pl.col("item_id").is_not_null())
               .group_by("region_code", "item_id", "category").agg(pl.col("user_id").n_unique().alias("requesters"))
               .join(menu, on="item_id", how="inner")
               .filter(pl.col("requesters") >= min_users)
               .sort(["region_code", "requesters", "item_id"], descending=[False, True, False]))
    return (counted.with_columns(pl.int_range(1, pl.len() + 1).over("region_code").alias("rank"))
            .filter(pl.col("rank") <= limit).with_columns(pl.col("requesters").cast(pl.Int64))
            .select(PROGRAMME_COLUMNS))


def _answers(asked: pl.DataFrame, items: pl.DataFrame, now: datetime, min_users: int) -> pl.DataFrame:
    """Requests, answered requests and median days to an answer, per district (k-anonymous)."""
    rows = []
    if asked.height:
        catalog = catalog_from_frame(visible_items(items.lazy()).collect())
        centres = district_centres(catalog)
        for (region,), group in asked.group_by("region_code"):
            days = []
            for row in group.to_dicts():
                request = Request(**{k: row.get(k) for k in Request.__dataclass_fields__})
                answer = status_of(request, catalog, centres, now)
                if answer.status == "matched" and answer.matched_at is not None:
                    days.append(max((answer.matched_at - request.ts).total_seconds(), 0.0) / 86400)
            shown = group["user_id"].n_unique() >= min_users
            rows.append({"region_code": region, "requests": group.height if shown else None,
                         "answered": len(days) if shown else None,
                         "median_days_to_answer": statistics.median(days) if shown and days else None,
                         "suppressed": not shown})
    schema = {"region_code": pl.String, "requests": pl.Int64, "answered": pl.Int64,
              "median_days_to_answer": pl.Float64, "suppressed": pl.Boolean}
    return pl.DataFrame(rows, schema=schema).sort("region_code")
