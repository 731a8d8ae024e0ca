"""What a batch of raw rows would change, computed before anything is written.

Each row is validated (:mod:`features.validate`), then given one fate: quarantined with its
reason, a duplicate (already stored, or repeated earlier in the batch), or accepted.
Users and items are upserted by id: the last valid row of an id wins, and a row equal to
the state of its id just before it is a duplicate. Accepted interactions get their source
(the app an API line names, or the provider file) and a poisoning flag
(:mod:`features.poisoning`). Every row's fate is counted per source table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from features import poisoning, schemas, store
from features.ingest.columns import APP, DATE, INCOMING
from features.ingest.summary import CONFLICT_EXAMPLES, TableCounts
from features.poisoning import PoisonSettings
from features.validate import (
    QUARANTINE,
    REASON,
    SOURCE,
    TABLE,
    clean_text,
    typed,
    typed_table,
    validate_interactions,
    validate_items,
    validate_users,
)
from recsys import provenance
from recsys.contract import latest_event_time
from recsys.home import EngineHome
from recsys.settings import EngineSettings

log = logging.getLogger(__name__)

STATUS = "__status"
_INDEX = "__index"


@dataclass
class Batch:
    """The raw rows of one run per stored table (interactions include the API's lines)."""

    items: pl.DataFrame
    users: pl.DataFrame
    interactions: pl.DataFrame


@dataclass
class Outcome:
    """What one run would change, computed before anything is written."""

    counts: dict[str, TableCounts]
    interactions: pl.DataFrame  # accepted rows in the stored schema plus the partition date
    quarantine: pl.DataFrame
    items: pl.DataFrame | None  # the whole new table, or None when unchanged
    users: pl.DataFrame | None


def evaluate(home: EngineHome, batch: Batch, settings: EngineSettings,
              poison: PoisonSettings | None = None) -> Outcome:
    """Validate and de-duplicate a batch against the current store, flag likely poisoning among
    the accepted interactions (:mod:`features.poisoning`); count every row's fate."""
    tz = settings.timezone
    items = validate_items(batch.items.lazy(), tz)
    users = validate_users(batch.users.lazy(), tz)
    # The catalog an interaction must match: the store's items plus this batch's valid ones.
    new_items = items.filter(pl.col(REASON).is_null()).select(pl.col(typed("item_id")).alias("item_id"))
    catalog = pl.concat([store.scan_items(home).select("item_id"), new_items])
    latest = latest_event_time(settings.max_future_skew_days)  # this machine's clock, read once per run
    interactions = validate_interactions(batch.interactions.lazy(), catalog, tz, latest=latest,
                                         rating_scale=(settings.rating_min, settings.rating_max)).with_columns(
        pl.col(typed("ts")).dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d").alias(DATE)
    )
    current_items, current_users = store.scan_items(home), store.scan_users(home)
    items_df, users_df, interactions_df, current_items_df, current_users_df = pl.collect_all(
        [items, users, interactions, current_items, current_users]
    )
    interactions_df = _interaction_status(home, interactions_df)
    conflicts = {"items": _conflicts(items_df, "items", "item_id"), "users": _conflicts(users_df, "users", "user_id")}
    items_df, items_table = _upsert(items_df, current_items_df, "items", "item_id")
    users_df, users_table = _upsert(users_df, current_users_df, "users", "user_id")
    checked = (items_df, users_df, interactions_df)
    accepted = interactions_df.filter(pl.col(STATUS) == "accepted")
    users_after = users_table if users_table is not None else current_users_df if home.users.exists() else None
    stored = _with_provenance(home, accepted, users_after, poison)
    counts = _count(checked)
    _count_flagged(counts, accepted[TABLE], stored)
    for table, (n, examples) in conflicts.items():
        if n:
            counts[table].conflicting_ids, counts[table].conflict_examples = n, examples
            log.info("%d %s ids were given different values in one run (last row wins), e.g. %s",
                     n, table, ", ".join(examples))
    return Outcome(
        counts=counts,
        interactions=stored.with_columns(accepted[DATE]),
        quarantine=pl.concat([_quarantine_rows(df) for df in checked]),
        items=items_table,
        users=users_table,
    )


def _with_provenance(home: EngineHome, accepted: pl.DataFrame, users: pl.DataFrame | None,
                     poison: PoisonSettings | None) -> pl.DataFrame:
    """The accepted interactions as stored: typed contract columns, their source and their flag."""
    rows = typed_table(accepted.lazy(), "interactions").collect().with_columns(_source_of(accepted))
    rows = rows.with_columns(accepted.select([pl.col(typed(c)).cast(t).alias(c)  # the list it names, if any
                                              for c, t in schemas.ATTRIBUTION.items()]))
    history = store.scan_interactions(home, lift_known_users=False)
    return rows.with_columns(poisoning.flag_rows(rows, history, users, poison)).select(
        list(schemas.STORED_INTERACTIONS))


def _source_of(accepted: pl.DataFrame) -> pl.Series:
    """Who sent each row: the app an API line names, else ``file:<name>`` of its file."""
    files = {path: provenance.file_source(path) for path in accepted[SOURCE].drop_nulls().unique().to_list()}
    by_app = pl.coalesce(clean_text(APP), pl.lit(provenance.UNKNOWN_API_SOURCE))
    by_file = pl.col(SOURCE).replace_strict(files, default=None, return_dtype=pl.String)
    return accepted.select(
        pl.when(pl.col(TABLE) == INCOMING).then(by_app).otherwise(by_file).alias(provenance.SOURCE)
    ).to_series()


def _count_flagged(counts: dict[str, TableCounts], tables: pl.Series, stored: pl.DataFrame) -> None:
    """Add the flagged rows per source table, reason and source to ``counts``."""
    flagged = stored.select(provenance.SOURCE, provenance.FLAG).with_columns(tables.alias(TABLE)).filter(
        pl.col(provenance.FLAG).is_not_null())
    for table, source, flag, n in flagged.group_by(TABLE, provenance.SOURCE, provenance.FLAG).len().sort(
            TABLE, provenance.SOURCE, provenance.FLAG, nulls_last=True).iter_rows():
        entry = counts.setdefault(table, TableCounts())
        entry.flagged[flag] = entry.flagged.get(flag, 0) + n
        by_source = entry.flagged_by_source.setdefault(source or provenance.UNKNOWN_API_SOURCE, {})
        by_source[flag] = by_source.get(flag, 0) + n


def _status(duplicate: pl.Expr) -> pl.Expr:
    return (
        pl.when(pl.col(REASON).is_not_null()).then(pl.lit("quarantined"))
        .when(duplicate).then(pl.lit("duplicates"))
        .otherwise(pl.lit("accepted"))
        .alias(STATUS)
    )


def _interaction_status(home: EngineHome, checked: pl.DataFrame) -> pl.DataFrame:
    """Mark valid interactions seen earlier in the batch or already stored as duplicates."""
    key = [typed(c) for c in schemas.INTERACTIONS]
    checked = checked.with_row_index(_INDEX)
    valid = checked.filter(pl.col(REASON).is_null())
    repeated = valid.filter(~pl.struct(key).is_first_distinct())[_INDEX]
    candidates = valid.filter(~pl.col(_INDEX).is_in(repeated.implode()))
    dates = set(candidates[DATE].unique().to_list())
    files = [f for f in store.interaction_files(home) if f.parent.name.removeprefix("date=") in dates]
    stored_ids = pl.Series(_INDEX, [], dtype=pl.UInt32)
    if files and candidates.height:
        stored = store.scan_files(files, schemas.INTERACTIONS).select(  # names a file it cannot read
            [pl.col(c).cast(t).alias(typed(c)) for c, t in schemas.INTERACTIONS.items()]
        ).unique()
        stored_ids = candidates.lazy().join(stored, on=key, how="semi", nulls_equal=True).select(
            _INDEX).collect()[_INDEX]
    duplicate = pl.col(_INDEX).is_in(pl.concat([repeated, stored_ids]).implode())
    return checked.with_columns(_status(duplicate)).drop(_INDEX)


def _upsert(checked: pl.DataFrame, current: pl.DataFrame, table: str, key: str
            ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Status of each users/items row and the table after the upsert (None if unchanged).

    A valid row is a duplicate when it equals the state of its id just before it: the
    previous valid row with that id in the batch, or else the stored row. The last valid
    row of each id wins, so the result matches applying the rows in order.
    """
    stored_schema = schemas.SCHEMAS[table]
    record = pl.struct([pl.col(typed(c)).cast(t) for c, t in stored_schema.items()])
    previous_stored = current.select(
        pl.col(key).alias(typed(key)),
        pl.struct([pl.col(c).cast(t).alias(typed(c)) for c, t in stored_schema.items()]).alias("__stored"),
    )
    checked = checked.with_row_index(_INDEX)
    valid = checked.filter(pl.col(REASON).is_null()).join(
        previous_stored, on=typed(key), how="left", maintain_order="left"
    ).with_columns(record.alias("__record"))
    previous = (
        pl.when(pl.col(typed(key)).is_first_distinct()).then(pl.col("__stored"))
        .otherwise(pl.col("__record").shift(1).over(typed(key)))
    )
    repeated = valid.filter(pl.col("__record").eq_missing(previous))[_INDEX]
    checked = checked.with_columns(_status(pl.col(_INDEX).is_in(repeated.implode()))).drop(_INDEX)
    if checked.filter(pl.col(STATUS) == "accepted").height == 0:
        return checked, None
    latest = typed_table(valid.lazy(), table).unique(subset=key, keep="last", maintain_order=True).collect()
    kept = current.filter(~pl.col(key).is_in(latest[key].implode()))
    return checked, pl.concat([kept, latest]).sort(key)


def _conflicts(validated: pl.DataFrame, table: str, key: str) -> tuple[int, list[str]]:
    """Ids with valid rows of different values in this batch: how many, and the first few.

    Last-wins still decides (:func:`_upsert`); this only makes the disagreement visible, since
    two providers describing one event differently is worth a look.
    """
    record = pl.struct([pl.col(typed(c)).cast(t) for c, t in schemas.SCHEMAS[table].items()])
    ids = (
        validated.filter(pl.col(REASON).is_null())
        .group_by(typed(key)).agg(record.n_unique().alias("__versions"))
        .filter(pl.col("__versions") > 1)[typed(key)].sort()
    )
    return ids.len(), ids.head(CONFLICT_EXAMPLES).to_list()


def _count(checked: Iterable[pl.DataFrame]) -> dict[str, TableCounts]:
    """Per source table: rows by status, and quarantined rows by reason."""
    counts: dict[str, TableCounts] = {}
    for frame in checked:
        for table, status, n in frame.group_by(TABLE, STATUS, maintain_order=True).len().iter_rows():
            entry = counts.setdefault(table, TableCounts())
            entry.input_rows += n
            setattr(entry, status, getattr(entry, status) + n)
        reasons = frame.filter(pl.col(STATUS) == "quarantined").group_by(TABLE, REASON).len()
        for table, reason, n in reasons.sort("len", REASON, descending=[True, False]).iter_rows():
            counts[table].reasons[reason] = n
    return counts


def _quarantine_rows(checked: pl.DataFrame) -> pl.DataFrame:
    bad = checked.filter(pl.col(STATUS) == "quarantined")
    return bad.select([
        (pl.col(c) if c in bad.columns else pl.lit(None)).cast(t).alias(c) for c, t in QUARANTINE.items()
    ])
