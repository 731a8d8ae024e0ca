"""The two public data sets as the engine sees them: contract frames plus an evaluation split.

The data sets live outside the repository, in ``<repo>/../shared/data`` (override with
``RECSYS_DATA_DIR``); nothing here copies them. Each loader returns the three contract tables
in the store's schemas (:mod:`features.schemas`), so everything downstream is the engine's
own pipeline: :func:`features.dataset.build_dataset` turns them into matrices.

MovieLens latest-small (public film screenings / on-demand video)
    ``user_id = userId``, ``item_id = movieId``; a rating of 4 stars or more becomes
    ``favorite`` (a positive outcome), anything lower ``view``; ``ts`` is the rating time.
    Both the positive truth and the weights then follow the engine's action weights. Items:
    ``title``, ``kind = "film"``, ``category`` = first genre, ``tags`` = all genres.
    Split: the engine's weekly-retrain protocol, one global time cutoff
    (:func:`time_split`), test window = the last 10 % of ratings by time.

goodbooks-10k (a public library's reading log)
    ``user_id``, ``item_id = book_id``; rating 4-5 -> ``favorite``, 1-3 -> ``view``. The
    2,278 repeated user-book rows are dropped (the first row of a pair is kept). The data
    has no times, but the contract requires one, so every interaction gets the same
    synthetic ``ts`` (:data:`GOODBOOKS_TS`): no decay, no accidental time signal. Items:
    ``title``, ``kind = "book"``, ``tags`` = the authors; ``category`` is empty because the
    shipped ``tags.csv`` names tags but no file maps them to books.
    Split: a seeded random per-user holdout (:func:`holdout_split`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from features import schemas
from features.dataset import StoreFrames, build_dataset, truth_pairs_of
from features.splits import Split, TruthPairs, draw_holdout, holdout_splits
from recsys.contract import ACTIONS, HIGH_RATING, MAX_ID_LENGTH
from recsys.settings import EngineSettings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
"""``<repo>/../shared/data``: where CI and every developer keep the real data sets."""

GOODBOOKS_TS = datetime(2017, 9, 1, tzinfo=UTC)
"""The one synthetic interaction time of goodbooks-10k (its first public release)."""

ML_TEST_FRACTION = 0.10
"""MovieLens test window: the last 10 % of ratings by time."""

HOLDOUT_FRACTION = 0.20
"""goodbooks holdout: this share of each eligible user's positive items is test truth."""

HOLDOUT_MIN_POSITIVES = 5
"""Users with fewer positive items stay entirely in training (they are not evaluated)."""


def data_dir() -> Path:
    """Where the real data sets are: ``$RECSYS_DATA_DIR``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("RECSYS_DATA_DIR") or DATA_DIR)


@dataclass(frozen=True)
class ContractFrames:
    """One data set's interactions, users and items in the store's schemas."""

    name: str
    interactions: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame

    def store_frames(self) -> StoreFrames:
        """The frames as the lazy inputs :func:`features.dataset.build_dataset` reads."""
        return StoreFrames(self.interactions.lazy(), self.users.lazy(), self.items.lazy())


# --------------------------------------------------------------------------- loaders


def load_movielens(root: Path | None = None, *, max_rows: int | None = None) -> ContractFrames:
    """MovieLens latest-small as contract frames (``max_rows``: only the first ratings rows)."""
    folder = (root or data_dir()) / "ml-latest-small"
    ratings = pl.read_csv(folder / "ratings.csv", n_rows=max_rows,
                          schema_overrides={"userId": pl.String, "movieId": pl.String})
    interactions = ratings.select(
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        _rating_action(pl.col("rating")),
        (pl.col("timestamp").cast(pl.Int64) * 1_000_000).cast(schemas.UTC_TIME).alias("ts"),
        pl.lit(None, dtype=pl.Float64).alias("value"),
    )
    movies = pl.read_csv(folder / "movies.csv", schema_overrides={"movieId": pl.String})
    genres = pl.col("genres").str.split("|").list.filter(pl.element() != "(no genres listed)")
    items = movies.select(
        pl.col("movieId").alias("item_id"),
        pl.col("title"),
        pl.lit("film").alias("kind"),
        genres.list.first().alias("category"),
        genres.alias("tags"),
    )
    return _frames("ml-latest-small", interactions, items)


def load_goodbooks(root: Path | None = None, *, max_rows: int | None = None) -> ContractFrames:
    """goodbooks-10k (first release) as contract frames (``max_rows``: first ratings rows)."""
    folder = (root or data_dir()) / "goodbooks-10k"
    ratings = pl.read_csv(folder / "ratings_v1.csv", n_rows=max_rows,
                          schema_overrides={"user_id": pl.String, "book_id": pl.String})
    interactions = ratings.unique(subset=["user_id", "book_id"], keep="first", maintain_order=True).select(
        pl.col("user_id"),
        pl.col("book_id").alias("item_id"),
        _rating_action(pl.col("rating")),
        pl.lit(GOODBOOKS_TS, dtype=schemas.UTC_TIME).alias("ts"),
        pl.lit(None, dtype=pl.Float64).alias("value"),
    )
    books = pl.read_csv(folder / "books.csv", columns=["book_id", "title", "authors"],
                        schema_overrides={"book_id": pl.String})
    authors = pl.col("authors").str.split(",").list.eval(pl.element().str.strip_chars()).list.filter(
        pl.element().str.len_bytes() > 0)
    items = books.select(
        pl.col("book_id").alias("item_id"),
        pl.col("title"),
        pl.lit("book").alias("kind"),
        pl.lit(None, dtype=pl.String).alias("category"),
        authors.alias("tags"),
    )
    return _frames("goodbooks-10k", interactions, items)


def _rating_action(rating: pl.Expr) -> pl.Expr:
    """4 stars or more is a positive outcome (``favorite``), anything lower a ``view``."""
    return pl.when(rating >= HIGH_RATING).then(pl.lit("favorite")).otherwise(pl.lit("view")).alias("action")


def _frames(name: str, interactions: pl.DataFrame, items: pl.DataFrame) -> ContractFrames:
    """Conform to the stored schemas: every column present, in order, with its type."""
    interactions = _conform(interactions, "interactions")
    items = _conform(items.with_columns(pl.lit(False).alias("hidden")), "items")
    users = _conform(interactions.select("user_id").unique().sort("user_id"), "users")
    return ContractFrames(name, interactions, users, items)


def _conform(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    schema = schemas.SCHEMAS[table]
    return frame.select(
        [pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t).alias(c) for c, t in schema.items()]
    )


def contract_problems(frames: ContractFrames) -> list[str]:
    """Every way the frames break the data contract (empty when they are valid)."""
    problems = []
    for table in ("interactions", "users", "items"):
        frame: pl.DataFrame = getattr(frames, table)
        if dict(frame.schema) != schemas.SCHEMAS[table]:
            problems.append(f"{table}: schema {dict(frame.schema)} is not the stored schema")
    inter, items = frames.interactions, frames.items
    for table, columns in (("interactions", ("user_id", "item_id", "action", "ts")), ("items", ("item_id",)),
                           ("users", ("user_id",))):
        frame = getattr(frames, table)
        for column in columns:
            if frame[column].null_count():
                problems.append(f"{table}.{column} has nulls")
            if frame[column].dtype == pl.String and (frame[column].str.len_chars() > MAX_ID_LENGTH).any():
                problems.append(f"{table}.{column} has ids longer than {MAX_ID_LENGTH}")
    if not inter["action"].is_in(ACTIONS).all():
        problems.append("interactions.action holds unknown actions")
    if items["item_id"].is_duplicated().any():
        problems.append("items.item_id is not unique")
    if not inter["item_id"].is_in(items["item_id"].implode()).all():
        problems.append("interactions reference items missing from the catalog")
    return problems


# --------------------------------------------------------------------------- splits


def time_split(frames: ContractFrames, settings: EngineSettings, *, test_days: float, seed: int = 0) -> Split:
    """The engine's own protocol: one global cutoff ``data_end - test_days``."""
    dataset = build_dataset(frames.store_frames(), settings, test_days=test_days, seed=seed)
    assert dataset.split is not None  # test_days > 0 always yields a split
    return dataset.split


def test_days_for_fraction(frames: ContractFrames, fraction: float) -> float:
    """Whole days back from the last interaction that hold ``fraction`` of the interactions."""
    ts = frames.interactions["ts"].sort()
    end = ts[-1]
    cutoff = ts[int(math.floor((1.0 - fraction) * (len(ts) - 1)))]
    return float(math.ceil((end - cutoff).total_seconds() / 86_400.0))


def holdout_split(frames: ContractFrames, settings: EngineSettings, *, test_fraction: float = HOLDOUT_FRACTION,
                  min_positives: int = HOLDOUT_MIN_POSITIVES, latest: bool = False, seed: int = 0) -> Split:
    """Per-user holdout (:mod:`features.splits`): seeded random, or each user's latest items.

    Every user with at least ``min_positives`` positive items (as the engine defines a
    positive outcome) gives ``max(1, round(test_fraction * n))`` of them to the test truth:
    drawn uniformly with ``seed``, or with ``latest`` the ones they reached last (ties broken
    with ``seed``). All their events on those items leave training. ``cutoff`` is the last
    interaction time: nothing in the catalog has ended.
    """
    store = frames.store_frames()
    dataset = build_dataset(store, settings, test_days=None, seed=seed)
    full = dataset.full
    found = truth_pairs_of(store, full)
    recency = found.last_seen if latest else np.zeros(len(found.pairs), dtype=np.int64)
    truth = TruthPairs(found.pairs, recency, "positive")
    draw = draw_holdout(truth, full.matrix.shape[0], seed=seed, fraction=test_fraction, min_items=min_positives,
                        validation=False)
    assert dataset.data_end is not None
    split, _ = holdout_splits(full, truth, draw, settings, dataset.data_end)
    log.info("holdout: %d users, %d test positives, %d train pairs", split.eval_users, split.truth.nnz,
             split.train.weights.nnz)
    return split


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Benchmark:
    """A data set and the protocol it is evaluated with."""

    key: str
    load: Callable[..., ContractFrames]
    protocol: str

    def split(self, frames: ContractFrames, settings: EngineSettings, seed: int = 0) -> Split:
        if self.key == "ml":
            return time_split(frames, settings, test_days=test_days_for_fraction(frames, ML_TEST_FRACTION),
                              seed=seed)
        return holdout_split(frames, settings, latest=self.key == "ml-user", seed=seed)


BENCHMARKS: dict[str, Benchmark] = {
    "ml": Benchmark("ml", load_movielens,
                    "global time cutoff, test = the last 10% of ratings by time (train on the past)"),
    "ml-user": Benchmark("ml-user", load_movielens,
                         f"per-user temporal holdout: the latest {HOLDOUT_FRACTION:.0%} of the positive items of "
                         f"every user with >= {HOLDOUT_MIN_POSITIVES} positives"),
    "goodbooks": Benchmark("goodbooks", load_goodbooks,
                           f"seeded random per-user holdout: {HOLDOUT_FRACTION:.0%} of the positive items of "
                           f"every user with >= {HOLDOUT_MIN_POSITIVES} positives"),
}
