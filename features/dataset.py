"""From the store to training data: axes, catalog, users, weighted matrices and the split.

One job = one ``collect_all`` at the edge. The split is the weekly-retrain protocol: a
global time cutoff ``data_end - test_days``; train on everything before it, test on what
happened after. Test truth = positive events after the cutoff by users seen in training,
on items they had not touched in training. Items with no training interaction are "cold".
Train and full matrices share the same axes (every catalog item, every known user), so a
model fitted on train can be warm-started on the full data and evaluated against the same
indices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp

from features import store
from features.events import clean_events, positive_events, weighted_pairs
from recsys.catalog import Catalog
from recsys.confidence import to_confidence
from recsys.contract import HIGH_RATING, POSITIVE_ACTIONS
from recsys.home import EngineHome
from recsys.models.base import TrainingData
from recsys.settings import EngineSettings
from recsys.users import UserTable

log = logging.getLogger(__name__)


@dataclass
class Split:
    train: TrainingData
    truth: sp.csr_matrix
    """Positive test events (users x items, binary)."""
    cutoff: datetime
    cold_items: np.ndarray
    """Items with no training interaction."""


@dataclass
class Dataset:
    full: TrainingData
    split: Split | None
    data_start: datetime | None
    data_end: datetime | None
    n_events: int


def load_dataset(home: EngineHome, settings: EngineSettings, *, test_days: float | None = 7,
                 seed: int = 0) -> Dataset:
    """Read the store and build full data plus (if ``test_days``) the time split."""
    frames = StoreFrames.read(home)
    return build_dataset(frames, settings, test_days=test_days, seed=seed)


@dataclass
class StoreFrames:
    interactions: pl.LazyFrame
    users: pl.LazyFrame
    items: pl.LazyFrame

    @classmethod
    def read(cls, home: EngineHome) -> StoreFrames:
        return cls(store.scan_interactions(home), store.scan_users(home), store.scan_items(home))


def build_dataset(frames: StoreFrames, settings: EngineSettings, *, test_days: float | None = 7,
                  seed: int = 0) -> Dataset:
    events = clean_events(frames.interactions, frames.items)
    bounds = events.select(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"), pl.len()).collect()
    start, end, n_events = bounds.row(0)
    if n_events == 0:
        raise ValueError("the store has no interactions on visible items; run `recsys ingest` first")
    cutoff = end - timedelta(days=test_days) if test_days else None

    user_axis = (
        pl.concat([frames.users.select("user_id"), events.select("user_id")]).unique().sort("user_id")
        .with_row_index("u")
    )
    item_axis = frames.items.select("item_id").unique().sort("item_id").with_row_index("i")
    plans = {
        "items": frames.items.join(item_axis, on="item_id").sort("i"),
        "users": user_axis.join(frames.users, on="user_id", how="left").sort("u"),
        "full": _indexed(weighted_pairs(events, settings, end), user_axis, item_axis),
    }
    if cutoff is not None:
        before, after = events.filter(pl.col("ts") < cutoff), events.filter(pl.col("ts") >= cutoff)
        train_pairs = weighted_pairs(before, settings, cutoff)
        truth = (
            positive_events(after, POSITIVE_ACTIONS, HIGH_RATING).select("user_id", "item_id").unique()
            .join(train_pairs.select("user_id").unique(), on="user_id", how="semi")
            .join(train_pairs.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
        )
        plans["train"] = _indexed(train_pairs, user_axis, item_axis)
        plans["truth"] = _indexed(truth.with_columns(weight=pl.lit(1.0)), user_axis, item_axis)
    collected = dict(zip(plans, pl.collect_all(list(plans.values())), strict=True))

    catalog = catalog_from_frame(collected["items"])
    users = users_from_frame(collected["users"])
    shape = (len(users), len(catalog))
    full = _training_data(collected["full"], shape, catalog, users, settings, seed)
    split = None
    if cutoff is not None:
        train = _training_data(collected["train"], shape, catalog, users, settings, seed)
        truth_matrix = _csr(collected["truth"], shape)
        split = Split(train=train, truth=truth_matrix, cutoff=cutoff, cold_items=~train.known_items)
        log.info("split at %s: %d train pairs, %d test positives", cutoff, train.matrix.nnz, truth_matrix.nnz)
    return Dataset(full=full, split=split, data_start=start, data_end=end, n_events=int(n_events))


def _indexed(pairs: pl.LazyFrame, user_axis: pl.LazyFrame, item_axis: pl.LazyFrame) -> pl.LazyFrame:
    return pairs.join(user_axis, on="user_id").join(item_axis, on="item_id").select("u", "i", "weight")


def _csr(pairs: pl.DataFrame, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix(
        (pairs["weight"].to_numpy().astype(np.float32), (pairs["u"].to_numpy(), pairs["i"].to_numpy())),
        shape=shape,
    )


def _training_data(pairs: pl.DataFrame, shape: tuple[int, int], catalog: Catalog, users: UserTable,
                   settings: EngineSettings, seed: int) -> TrainingData:
    weights = _csr(pairs, shape)
    confidence = to_confidence(weights, settings.confidence, settings.alpha)
    return TrainingData(matrix=confidence, weights=weights, catalog=catalog, users=users, seed=seed)


def _epoch(frame: pl.DataFrame, column: str) -> list[float | None]:
    return frame.select(pl.col(column).dt.epoch("ms") / 1000.0).to_series().to_list()


def catalog_from_frame(items: pl.DataFrame) -> Catalog:
    """A :class:`Catalog` from the stored items table (rows in axis order)."""
    return Catalog.from_columns(
        items["item_id"].to_list(),
        title=items["title"].to_list(), kind=items["kind"].to_list(), category=items["category"].to_list(),
        region=items["region_code"].to_list(), tags=items["tags"].to_list(),
        lat=items["lat"].to_list(), lon=items["lon"].to_list(),
        starts_at=_epoch(items, "starts_at"), ends_at=_epoch(items, "ends_at"),
        hidden=items["hidden"].fill_null(False).to_list(), venue=items["venue_id"].to_list(),
    )


def users_from_frame(users: pl.DataFrame) -> UserTable:
    return UserTable.from_columns(
        users["user_id"].to_list(), users["region_code"].to_list(), users["age_band"].to_list(),
        users["area_type"].to_list(),
    )
