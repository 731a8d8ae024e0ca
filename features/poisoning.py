"""Poisoning defences: interactions that look manufactured are flagged at ingest and left out.

An app key can post anything that passes the data contract. An adversarial test posted one
batch of 1,300 rows on a film nobody had touched (200 real residents of one district plus 500
made-up ids) and made it the district's first recommendation, every new user's, the
planner report's top item and its category the district's most "under-supplied". Nothing in
those rows breaks the contract, so quarantine cannot catch them; what gives them away is how
they relate to the rest of the store. Ingest therefore judges every accepted interaction
against the store and the users table with three rules (thresholds: :class:`PoisonSettings`),
and writes the first one a row meets into its ``flag`` column (:data:`recsys.provenance.FLAG`).

Only rows posted through the API are judged by default (``judge_files`` widens it to provider
files). The write API is where anyone holding a key can manufacture rows; an operator's own
feed is trusted, and real exports look like the patterns below for honest reasons: a venue's
check-in file for one show is all about one item, and a historical ratings log has days on
which hundreds of new members rated the same hit on their first day. Judging those would
leave real behaviour out of training.

1. :attr:`Flag.NEW_USER_BURST`: within one burst window (``burst_window_hours``, judged on
   two grids half a window apart, so no burst escapes by straddling a boundary) at least
   ``burst_min_new_users`` *new* ids engaged with one item and made up at least
   ``burst_min_new_share`` of the ids that did. An id is new in a window when its first
   interaction in the store falls in it, it was not registered before the window (users
   table ``registered_at``), and the store has at least a window of history before it (at
   the start of a store everyone is new). The new ids' rows on that item in that window are
   flagged.
2. :attr:`Flag.SOURCE_DOMINANCE`: one source (the posting app, or ``file:<name>``) holds
   more than ``source_max_share`` of an item's events (an item with at least
   ``source_min_item_events``), and that item is at least ``source_min_focus`` of
   everything the source ever sent. The focus condition is what tells a flood from an
   ordinary feed: an app or provider file spreads its events over many items, while a
   manufactured batch aims at one. That source's rows on the item are flagged.
3. :attr:`Flag.UNKNOWN_USER`: when the store has a users table, a row whose user is not in
   it. This flag lifts by itself once the user appears in the users table (a resident who
   posts before the weekly users feed lists them is not an attacker):
   :func:`lift_known_users`, applied by every store read.

Flagged rows stay in the store (nothing is deleted; counts per source and reason are in the
ingest summary and ``recsys store-info``). They are left out of training, of the evaluation
and gate windows and of the planner report: :func:`without_flagged`, applied by
:func:`features.events.clean_events` and by the report. Rows already stored are never
rewritten: a burst spread over several ingest runs flags the rows of the run that completes
it (earlier rows stay as they were).
"""

from __future__ import annotations

import logging
from enum import StrEnum

import polars as pl
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.schemas import PROVENANCE, UTC_TIME
from recsys.provenance import FILE_PREFIX, FLAG, SOURCE

log = logging.getLogger(__name__)

class Flag(StrEnum):
    """Why ingest set a row aside; the value is what the ``flag`` column holds. Listed in
    precedence order: a row meeting several rules is flagged with the first."""

    NEW_USER_BURST = "new_user_burst"
    SOURCE_DOMINANCE = "source_dominance"
    UNKNOWN_USER = "unknown_user"


class PoisonSettings(BaseSettings):
    """Thresholds of the rules (module docstring); ``RECSYS_POISON_<NAME>`` sets each."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_POISON_", extra="ignore")

    enabled: bool = Field(True, description="judge new rows at ingest (false: nothing is flagged)")
    judge_files: bool = Field(False, description="judge rows of provider files too, not only rows posted "
                                                 "through the API")
    burst_window_hours: float = Field(24.0, gt=0, description="length of a burst window")
    burst_min_new_users: int = Field(50, ge=1, description="new ids on one item in one window that make a burst")
    burst_min_new_share: float = Field(0.5, ge=0, le=1,
                                       description="share of the item's ids in the window that must be new")
    source_min_item_events: int = Field(100, ge=1, description="events an item needs before one source can "
                                                               "dominate it")
    source_max_share: float = Field(0.8, ge=0, le=1, description="a source holding more than this share of an "
                                                                 "item's events dominates it...")
    source_min_focus: float = Field(0.2, ge=0, le=1, description="...when the item is at least this share of "
                                                                 "everything the source sent")


_KEYS = ("user_id", "item_id", "ts", SOURCE)
_MICROS_PER_HOUR = 3_600_000_000


def flag_rows(batch: pl.DataFrame, history: pl.LazyFrame, users: pl.DataFrame | None,
              settings: PoisonSettings | None = None) -> pl.Series:
    """The flag of each row of ``batch`` (null: not flagged), in row order.

    ``batch`` holds the new rows (``user_id``, ``item_id``, ``ts``, ``source``); ``history``
    the rows already stored (same columns, possibly more); ``users`` the users table as it
    will be after this ingest (``user_id``, ``registered_at``), or None when the store has
    none (then no row is :attr:`Flag.UNKNOWN_USER`).
    """
    settings = settings or PoisonSettings()
    if batch.height == 0 or not settings.enabled:
        return pl.Series(FLAG, [None] * batch.height, dtype=pl.String)
    rows = batch.select(_KEYS).with_row_index("__row")
    every = pl.concat([history.select(_KEYS), rows.lazy().select(_KEYS)])
    width = int(settings.burst_window_hours * _MICROS_PER_HOUR)
    plans = [_burst_rows(rows, every, users, settings, width, offset) for offset in (0, width // 2)]
    plans.append(_dominated_rows(rows, every, settings))
    *bursts, dominated = (frame["__row"] for frame in pl.collect_all(plans))  # one pass shares the reads
    unknown = _unknown_rows(rows, users)
    judged = pl.lit(True) if settings.judge_files else posted_through_api()
    flags = rows.select(
        pl.when(~judged).then(pl.lit(None, pl.String))
        .when(pl.col("__row").is_in(pl.concat(bursts).implode())).then(pl.lit(Flag.NEW_USER_BURST.value))
        .when(pl.col("__row").is_in(dominated.implode())).then(pl.lit(Flag.SOURCE_DOMINANCE.value))
        .when(pl.col("__row").is_in(unknown.implode())).then(pl.lit(Flag.UNKNOWN_USER.value))
        .otherwise(pl.lit(None, pl.String)).alias(FLAG)
    ).to_series()
    if flags.null_count() < flags.len():
        log.warning("flagged %d of %d new interactions: %s", flags.len() - flags.null_count(), flags.len(),
                    dict(flags.drop_nulls().value_counts().iter_rows()))
    return flags


def posted_through_api() -> pl.Expr:
    """Rows an app posted (its name is the source), as opposed to a provider file's (``file:<name>``) or
    rows from before sources were recorded."""
    return pl.col(SOURCE).is_not_null() & ~pl.col(SOURCE).str.starts_with(FILE_PREFIX)


def _unknown_rows(rows: pl.DataFrame, users: pl.DataFrame | None) -> pl.Series:
    """Rows of users the users table does not list (rule 3); none without a users table."""
    if users is None:
        return pl.Series("__row", [], dtype=pl.UInt32)
    return rows.filter(~pl.col("user_id").is_in(users["user_id"].implode()))["__row"]


def _dominated_rows(rows: pl.DataFrame, every: pl.LazyFrame, settings: PoisonSettings) -> pl.LazyFrame:
    """Rows of a source that holds too much of an item it is focused on (rule 2)."""
    on_items = every.join(rows.lazy().select("item_id").unique(), on="item_id", how="semi")
    per_item = on_items.group_by("item_id").agg(pl.len().alias("__item"))
    per_pair = on_items.filter(pl.col(SOURCE).is_not_null()).group_by("item_id", SOURCE).agg(pl.len().alias("__pair"))
    sources = rows.lazy().select(SOURCE).drop_nulls().unique()
    per_source = every.join(sources, on=SOURCE, how="semi").group_by(SOURCE).agg(pl.len().alias("__source"))
    dominated = per_pair.join(per_item, on="item_id").join(per_source, on=SOURCE).filter(
        (pl.col("__item") >= settings.source_min_item_events)
        & (pl.col("__pair") > settings.source_max_share * pl.col("__item"))
        & (pl.col("__pair") >= settings.source_min_focus * pl.col("__source"))
    ).select("item_id", SOURCE)
    return rows.lazy().join(dominated, on=["item_id", SOURCE], how="semi").select("__row")


def _burst_rows(rows: pl.DataFrame, every: pl.LazyFrame, users: pl.DataFrame | None, settings: PoisonSettings,
                width: int, offset: int) -> pl.LazyFrame:
    """Rows of new ids in a burst on one item (rule 1) on the grid of ``width``-microsecond
    windows shifted by ``offset``."""
    window = ((pl.col("ts").dt.epoch("us") - offset) // width).alias("__window")
    first = ((pl.col("__first").dt.epoch("us") - offset) // width)
    window_start = (pl.col("__window") * width + offset).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    seen = every.group_by("user_id").agg(pl.col("ts").min().alias("__first"))
    # nobody is new in the store's first window: it has no history to be new against
    seen = seen.join(seen.select((pl.col("__first").min() + pl.duration(microseconds=width)).alias("__history")),
                     how="cross")
    is_new = (first == pl.col("__window")) & (pl.col("__first") >= pl.col("__history"))
    registered = (users.lazy().select("user_id", pl.col("registered_at").cast(UTC_TIME))
                  if users is not None and "registered_at" in users.columns else None)
    if registered is not None:  # an account registered before the window is not a made-up id
        is_new = is_new & (pl.col("registered_at").is_null() | (pl.col("registered_at") >= window_start))

    def judged(frame: pl.LazyFrame) -> pl.LazyFrame:
        frame = frame.join(seen, on="user_id", how="left")
        if registered is not None:
            frame = frame.join(registered, on="user_id", how="left")
        return frame.with_columns(is_new.fill_null(False).alias("__new"))

    candidates = judged(rows.lazy().with_columns(window)).filter(pl.col("__new"))
    touched = candidates.select("item_id", "__window").unique()
    neighbours = judged(every.with_columns(window).join(touched, on=["item_id", "__window"], how="semi"))
    bursts = neighbours.group_by("item_id", "__window").agg(
        pl.col("user_id").n_unique().alias("__ids"),
        pl.col("user_id").filter(pl.col("__new")).n_unique().alias("__new_ids"),
    ).filter(
        (pl.col("__new_ids") >= settings.burst_min_new_users)
        & (pl.col("__new_ids") >= settings.burst_min_new_share * pl.col("__ids"))
    ).select("item_id", "__window")
    return candidates.join(bursts, on=["item_id", "__window"], how="semi").select("__row")


def lift_known_users(interactions: pl.LazyFrame, users: pl.LazyFrame) -> pl.LazyFrame:
    """``interactions`` with :attr:`Flag.UNKNOWN_USER` cleared for users the users table now lists."""
    known = users.select("user_id").unique().with_columns(pl.lit(True).alias("__known"))
    lifted = (pl.col(FLAG) == Flag.UNKNOWN_USER.value) & pl.col("__known").fill_null(False)
    return (
        interactions.join(known, on="user_id", how="left", maintain_order="left")
        .with_columns(pl.when(lifted).then(pl.lit(None, pl.String)).otherwise(pl.col(FLAG)).alias(FLAG))
        .drop("__known")
    )


def without_flagged(interactions: pl.LazyFrame) -> pl.LazyFrame:
    """The rows that count (flag null), without the provenance columns; a frame without
    them (read from elsewhere than the store) passes unchanged."""
    present = [c for c in PROVENANCE if c in interactions.collect_schema()]
    if FLAG in present:
        interactions = interactions.filter(pl.col(FLAG).is_null())
    return interactions.drop(present)


def left_out(interactions: pl.LazyFrame) -> pl.LazyFrame:
    """Flagged rows per reason (columns ``flag``, ``rows``), the largest first."""
    if FLAG not in interactions.collect_schema():
        return pl.LazyFrame(schema={FLAG: pl.String, "rows": pl.UInt32})
    return (interactions.filter(pl.col(FLAG).is_not_null()).group_by(FLAG).agg(pl.len().alias("rows"))
            .sort(["rows", FLAG], descending=[True, False]))
