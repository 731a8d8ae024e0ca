"""The training features of :mod:`features.dataset`, computed with Spark DataFrames.

Same definitions, same result: the committed store files (commit rule and erasures of
:mod:`features.store`; rows flagged as likely poisoning left out, :mod:`features.poisoning`),
clean events (hidden items and exact duplicates dropped), action
weights, half-life decay, one summed weight per user x item, the global time cutoff and the
test truth (positives after the cutoff by train users, on items they had not touched in
training). Every step over interactions runs in Spark; the driver receives only what the
model artifact needs: the two id axes with their catalog and user rows, the aggregated
user x item weights (sparse matrices) and a few scalars (first/last event time, count).

The id axes are the ones the polars path builds (users table ∪ interaction users sorted
by id; every catalog item sorted by id), so a model fitted in Spark is scored, evaluated,
bundled and served exactly like one fitted with ``implicit``. Axis positions are attached
to the Spark rows too (``u``, ``i``), ready for MLlib, which needs integer ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features import poisoning, schemas, store
from features.dataset import Dataset, Split, catalog_from_frame, users_from_frame
from features.events import MIN_DECAYED_WEIGHT
from recsys import provenance
from recsys.confidence import to_confidence
from recsys.contract import HIGH_RATING, POSITIVE_ACTIONS
from recsys.home import EngineHome
from recsys.models.base import TrainingData
from recsys.settings import EngineSettings

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS_PER_SECOND = 1_000_000
SECONDS_PER_DAY = 86_400.0


# --------------------------------------------------------------------------- reading the store


@dataclass
class SparkStoreFrames:
    """The three stored tables as Spark DataFrames (stored column names and types)."""

    interactions: DataFrame
    users: DataFrame
    items: DataFrame

    @classmethod
    def read(cls, spark: SparkSession, home: EngineHome) -> SparkStoreFrames:
        """Committed interaction files only; erased users filtered out of interactions and users."""
        erased = sorted(store.erased_users(home))
        files = [str(path) for path in store.interaction_files(home)]
        interactions = _read(spark, schemas.STORED_INTERACTIONS, files)
        users = _read_table(spark, "users", [str(home.users)] if home.users.exists() else [])
        items = _read_table(spark, "items", [str(home.items)] if home.items.exists() else [])
        users = _without_erased(spark, users, erased)
        interactions = _without_flagged(_without_erased(spark, interactions, erased), users)
        return cls(interactions, users, items)


def spark_schema(table: str) -> T.StructType:
    """The Spark schema of a stored table, derived from :data:`features.schemas.SCHEMAS`."""
    return _struct(schemas.SCHEMAS[table])


def _struct(schema: Mapping[str, pl.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, _spark_type(dtype), True) for name, dtype in schema.items()])


def _spark_type(dtype: pl.DataType) -> T.DataType:
    if dtype == pl.String:
        return T.StringType()
    if dtype == pl.Float64:
        return T.DoubleType()
    if dtype == pl.Int64:
        return T.LongType()
    if dtype == pl.Boolean:
        return T.BooleanType()
    if isinstance(dtype, pl.Datetime):
        return T.TimestampType()
    if isinstance(dtype, pl.List):
        return T.ArrayType(_spark_type(dtype.inner), True)
    raise TypeError(f"no Spark type for stored dtype {dtype}")


def _read_table(spark: SparkSession, table: str, files: list[str]) -> DataFrame:
    return _read(spark, schemas.SCHEMAS[table], files)


def _read(spark: SparkSession, columns: Mapping[str, pl.DataType], files: list[str]) -> DataFrame:
    """Store files in ``columns`` (a column a file lacks, like the provenance of older files, reads as null)."""
    schema = _struct(columns)
    if not files:
        return spark.createDataFrame([], schema)
    # An explicit schema: no inference pass over the files, and the stored names and types.
    return spark.read.schema(schema).parquet(*files).select(*schema.names)


def _without_erased(spark: SparkSession, frame: DataFrame, erased: list[str]) -> DataFrame:
    if not erased:
        return frame
    gone = spark.createDataFrame([(user,) for user in erased], T.StructType([T.StructField("user_id",
                                                                                            T.StringType())]))
    return frame.join(F.broadcast(gone), on="user_id", how="left_anti")


def _without_flagged(interactions: DataFrame, users: DataFrame) -> DataFrame:
    """The rows that count, without the provenance columns: what
    :func:`features.poisoning.lift_known_users` and :func:`~features.poisoning.without_flagged`
    leave of a store read (an ``unknown_user`` flag lifts once the users table lists the user)."""
    known = users.select("user_id").distinct().withColumn("__known", F.lit(True))
    flag = F.col(provenance.FLAG)
    lifted = (flag == F.lit(poisoning.Flag.UNKNOWN_USER.value)) & F.col("__known").isNotNull()
    return (interactions.join(known, on="user_id", how="left").filter(flag.isNull() | lifted)
            .drop("__known", *schemas.PROVENANCE))


# --------------------------------------------------------------------------- events and weights


def clean_events(interactions: DataFrame, items: DataFrame) -> DataFrame:
    """Interactions on visible catalog items, exact duplicates removed."""
    visible = items.filter(~F.coalesce(F.col("hidden"), F.lit(False))).select("item_id")
    return interactions.dropDuplicates().join(visible, on="item_id", how="left_semi")


def action_weight(settings: EngineSettings) -> Column:
    """The weight of each interaction from the configured action weights (``rate``: value x per-star)."""
    pairs = [F.lit(part) for action, weight in sorted(settings.action_weights.items())
             for part in (action, float(weight))]
    by_action = F.coalesce(F.create_map(*pairs)[F.col("action")], F.lit(0.0))
    rated = F.coalesce(F.col("value"), F.lit(0.0)) * F.lit(float(settings.rate_weight_per_star))
    return F.when(F.col("action") == "rate", rated).otherwise(by_action).alias("weight")


def decayed_weight(reference: datetime, half_life_days: float) -> Column:
    """``weight · 0.5^(age_days / half_life)``; events after the reference are not boosted.

    The age is counted in whole seconds, truncated, as the polars definition does; a half-life
    of 0 means no decay, as there.
    """
    if half_life_days == 0:
        return F.col("weight").alias("weight")
    age_micros = F.lit(to_micros(reference)) - F.unix_micros(F.col("ts"))
    age_seconds = F.floor(age_micros / MICROS_PER_SECOND)  # negative ages are clipped below anyway
    age_days = F.greatest(age_seconds / SECONDS_PER_DAY, F.lit(0.0))
    decayed = F.col("weight") * F.pow(F.lit(0.5), age_days / float(half_life_days))
    # the same floor as the polars definition: an old event stays in the history
    floored = F.when(F.col("weight") > 0, F.greatest(decayed, F.lit(MIN_DECAYED_WEIGHT))).otherwise(F.lit(0.0))
    return floored.alias("weight")


def weighted_pairs(events: DataFrame, settings: EngineSettings, reference: datetime) -> DataFrame:
    """One row per (user_id, item_id): summed decayed weight and first/last time."""
    return (
        events.withColumn("weight", action_weight(settings))
        .withColumn("weight", decayed_weight(reference, settings.half_life_days))
        .groupBy("user_id", "item_id")
        .agg(F.sum("weight").alias("weight"), F.min("ts").alias("first_ts"), F.max("ts").alias("last_ts"))
        .filter(F.col("weight") > 0)
    )


def positive_events(events: DataFrame, positive_actions: frozenset[str], high_rating: float) -> DataFrame:
    """Events that count as a positive outcome (evaluation truth)."""
    return events.filter(
        F.col("action").isin(sorted(positive_actions))
        | ((F.col("action") == "rate") & (F.col("value") >= high_rating))
    )


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(micros))


# --------------------------------------------------------------------------- the data set


@dataclass
class SparkDataset:
    """The training data set: its local form (what evaluation and the bundle use) and the
    indexed Spark pairs ``(u, i, weight)`` a Spark model is fitted on."""

    local: Dataset
    full_pairs: DataFrame
    train_pairs: DataFrame | None
    cached: list[DataFrame] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Drop the cached Spark frames (the local data stays)."""
        for frame in self.cached:
            frame.unpersist()
        self.cached.clear()


def load_dataset(spark: SparkSession, home: EngineHome, settings: EngineSettings, *,
                 test_days: float | None = 7, seed: int = 0) -> SparkDataset:
    """Read the store with Spark and build full data plus (if ``test_days``) the time split."""
    return build_dataset(SparkStoreFrames.read(spark, home), settings, test_days=test_days, seed=seed)


def build_dataset(frames: SparkStoreFrames, settings: EngineSettings, *, test_days: float | None = 7,
                  seed: int = 0) -> SparkDataset:
    """:func:`features.dataset.build_dataset`, with every step over interactions in Spark."""
    cached: list[DataFrame] = []

    def keep(frame: DataFrame) -> DataFrame:
        cached.append(frame.persist())
        return frame

    events = keep(clean_events(frames.interactions, frames.items))
    start_us, end_us, n_events = events.agg(
        F.min(F.unix_micros("ts")), F.max(F.unix_micros("ts")), F.count(F.lit(1))
    ).first()
    if not n_events:
        for frame in cached:
            frame.unpersist()
        raise ValueError("the store has no interactions on visible items; run `recsys ingest` first")
    start, end = from_micros(start_us), from_micros(end_us)
    cutoff = end - timedelta(days=test_days) if test_days else None

    user_axis = keep(_axis(frames.users.select("user_id").union(events.select("user_id")), "user_id", "u"))
    item_axis = keep(_axis(frames.items.select("item_id"), "item_id", "i"))
    catalog = catalog_from_frame(_to_polars(frames.items.join(item_axis, on="item_id").orderBy("i"),
                                            schemas.ITEMS))
    users = users_from_frame(_to_polars(user_axis.join(frames.users, on="user_id", how="left").orderBy("u"),
                                        schemas.USERS))
    shape = (len(users), len(catalog))

    full_pairs = keep(_indexed(weighted_pairs(events, settings, end), user_axis, item_axis))
    full = _training_data(_collect_csr(full_pairs, shape), catalog, users, settings, seed)
    split, train_pairs = None, None
    if cutoff is not None:
        before = events.filter(F.unix_micros("ts") < to_micros(cutoff))
        after = events.filter(F.unix_micros("ts") >= to_micros(cutoff))
        train_weighted = keep(weighted_pairs(before, settings, cutoff))
        truth = (
            positive_events(after, POSITIVE_ACTIONS, HIGH_RATING).select("user_id", "item_id").distinct()
            .join(train_weighted.select("user_id").distinct(), on="user_id", how="left_semi")
            .join(train_weighted.select("user_id", "item_id"), on=["user_id", "item_id"], how="left_anti")
        )
        train_pairs = keep(_indexed(train_weighted, user_axis, item_axis))
        train = _training_data(_collect_csr(train_pairs, shape), catalog, users, settings, seed)
        truth_matrix = _collect_csr(_indexed(truth.withColumn("weight", F.lit(1.0)), user_axis, item_axis), shape)
        split = Split(train=train, truth=truth_matrix, cutoff=cutoff, cold_items=~train.known_items)
        log.info("split at %s: %d train pairs, %d test positives", cutoff, train.matrix.nnz, truth_matrix.nnz)
    local = Dataset(full=full, split=split, data_start=start, data_end=end, n_events=int(n_events))
    return SparkDataset(local=local, full_pairs=full_pairs, train_pairs=train_pairs, cached=cached)


def _axis(ids: DataFrame, id_column: str, index_column: str) -> DataFrame:
    """Distinct ids numbered 0.. in id order (Spark's binary string order = polars' sort).

    A global row_number runs in one partition; an axis is one short string per user or
    item, far smaller than the interactions, so that is cheap next to the rest of the job.
    """
    in_id_order = Window.orderBy(F.col(id_column).asc_nulls_first())
    return ids.distinct().withColumn(index_column, (F.row_number().over(in_id_order) - 1).cast("int"))


def _indexed(pairs: DataFrame, user_axis: DataFrame, item_axis: DataFrame) -> DataFrame:
    return (pairs.join(user_axis, on="user_id").join(item_axis, on="item_id")
            .select("u", "i", F.col("weight").cast("double").alias("weight")))


def _collect_csr(pairs: DataFrame, shape: tuple[int, int]) -> sp.csr_matrix:
    """The ``(u, i, weight)`` rows as a users x items CSR matrix (Arrow batches to the driver)."""
    table = to_arrow(pairs)
    rows = table.column("u").to_numpy(zero_copy_only=False)
    columns = table.column("i").to_numpy(zero_copy_only=False)
    weights = table.column("weight").to_numpy(zero_copy_only=False).astype(np.float32)
    return sp.csr_matrix((weights, (rows, columns)), shape=shape)


def _training_data(weights: sp.csr_matrix, catalog, users, settings: EngineSettings, seed: int) -> TrainingData:
    confidence = to_confidence(weights, settings.confidence, settings.alpha)
    return TrainingData(matrix=confidence, weights=weights, catalog=catalog, users=users, seed=seed)


def _to_polars(frame: DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A Spark frame as polars with the stored column types (timestamps back to UTC)."""
    collected = cast(pl.DataFrame, pl.from_arrow(to_arrow(frame.select(*schema))))
    return collected.with_columns(
        pl.col(name).dt.convert_time_zone("UTC") if isinstance(dtype, pl.Datetime) else pl.col(name).cast(dtype)
        for name, dtype in schema.items()
    )


def to_arrow(frame: DataFrame) -> pa.Table:
    """Collect a Spark frame as an Arrow table (Spark >= 4 has ``toArrow``; 3.5 has the batches)."""
    if hasattr(frame, "toArrow"):
        return frame.toArrow()
    from pyspark.sql.pandas.types import to_arrow_schema  # pragma: no cover - Spark 3.5

    batches = frame._collect_as_arrow()  # pragma: no cover - Spark 3.5
    return pa.Table.from_batches(batches, schema=to_arrow_schema(frame.schema))  # pragma: no cover
