"""From the store to training data: axes, catalog, users, weighted matrices and the splits.

One job = one ``collect_all`` per stage at the edge. The split is the weekly-retrain
protocol: a global time cutoff ``data_end - test_days``; train on everything before it, test
on what happened after. Test truth = positive events after the cutoff by users seen in
training, on items they had not touched in training. Items with no training interaction are
"cold". Train and full matrices share the same axes (every catalog item, every known user),
so a model fitted on train can be warm-started on the full data and evaluated against the
same indices.

With ``validation`` a second cut is carved out of the training part the same way
(train | validation | test), for a recipe search that must never see the test. With
``protocol="auto"`` a store whose time windows cannot judge a model (one timestamp for
everything, or fewer than :data:`features.splits.MIN_EVAL_USERS` users with truth in a window)
is split by a per-user holdout instead (:mod:`features.splits`); the dataset says which.

``data_end`` never runs past the wall clock: events stamped in the future are left out.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from features import store
from features.events import clean_events, dismissals, positive_events, weighted_pairs
from features.poisoning import without_flagged
from features.repeats import returning_pairs
from features.splits import (
    MIN_EVAL_USERS,
    MIN_TRAIN_USERS,
    Split,
    TruthKind,
    TruthPairs,
    draw_holdout,
    holdout_splits,
)
from recsys.catalog import Catalog
from recsys.confidence import to_confidence
from recsys.contract import HIGH_RATING, POSITIVE_ACTIONS
from recsys.home import EngineHome
from recsys.models.base import TrainingData
from recsys.settings import EngineSettings
from recsys.users import UserTable

log = logging.getLogger(__name__)

ProtocolChoice = Literal["time", "holdout", "auto"]

__all__ = ["Dataset", "Split", "StoreFrames", "build_dataset", "load_dataset", "truth_pairs_of", "weights_key"]


@dataclass
class Dataset:
    full: TrainingData
    split: Split | None
    data_start: datetime | None
    data_end: datetime | None
    n_events: int
    validation: Split | None = None
    """Inner train | validation, carved out of ``split.train`` (only when asked for)."""
    protocol: str = "time"
    """``time`` (global cutoff) or ``holdout`` (per user); ``none`` without a split."""
    note: str = ""
    """What the split is, in a sentence for the CLI and the run's tags."""
    dismissed: sp.csr_matrix | None = None
    """Users x items: each user's latest ``not_interested`` on an item (epoch seconds), for the artifact."""
    returns: sp.csr_matrix | None = None
    """Users x items: when each pair that may be listed again returns (recsys.repeats), for the artifact."""


def load_dataset(home: EngineHome, settings: EngineSettings, *, test_days: float | None = 7,
                 seed: int = 0, validation: bool = False, protocol: ProtocolChoice = "time") -> Dataset:
    """Read the store and build full data plus (if ``test_days``) the split(s)."""
    frames = StoreFrames.read(home)
    return build_dataset(frames, settings, test_days=test_days, seed=seed, validation=validation,
                         protocol=protocol)


@dataclass
class StoreFrames:
    interactions: pl.LazyFrame
    users: pl.LazyFrame
    items: pl.LazyFrame

    @classmethod
    def read(cls, home: EngineHome) -> StoreFrames:
        return cls(store.scan_interactions(home), store.scan_users(home), store.scan_items(home))

    def collected(self) -> StoreFrames:
        """The same frames held in memory: a search builds datasets from them many times."""
        interactions, users, items = pl.collect_all([self.interactions, self.users, self.items])
        return StoreFrames(interactions.lazy(), users.lazy(), items.lazy())


def weights_key(settings: EngineSettings) -> str:
    """What a dataset's weights depend on; datasets with equal keys differ only in the confidence
    transform, which :func:`features.splits.with_confidence` applies without reading the store."""
    return json.dumps(settings.model_dump(include={"half_life_days", "action_weights", "rate_weight_per_star"}),
                      sort_keys=True)


def build_dataset(frames: StoreFrames, settings: EngineSettings, *, test_days: float | None = 7,
                  seed: int = 0, validation: bool = False, protocol: ProtocolChoice = "time",
                  now: datetime | None = None) -> Dataset:
    events = _present(clean_events(frames.interactions, frames.items), now or datetime.now(UTC))
    bounds = events.select(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"), pl.len()).collect()
    start, end, n_events = bounds.row(0)
    if n_events == 0:
        raise ValueError("the store has no interactions on visible items; run `recsys ingest` first")
    user_axis = (
        pl.concat([frames.users.select("user_id"), events.select("user_id")]).unique().sort("user_id")
        .with_row_index("u")
    )
    item_axis = frames.items.select("item_id").unique().sort("item_id").with_row_index("i")
    axes = _Axes(user_axis, item_axis)
    # an explicit protocol keeps the engine's positive-outcome truth; auto may fall back to engagement
    truth_kind: TruthKind = _truth_kind(events) if protocol == "auto" else "positive"
    windows = _windows(end, test_days, validation)
    use_time = bool(windows) and (protocol == "time" or (
        protocol == "auto" and _windows_usable(events, windows, truth_kind, axes)))
    plans = {
        "items": frames.items.join(item_axis, on="item_id").sort("i"),
        "users": user_axis.join(frames.users, on="user_id", how="left").sort("u"),
        "full": axes.indexed(weighted_pairs(events, settings, end)),
        "returns": axes.indexed(returning_pairs(events, settings)),
        "dismissed": _dismissed_plan(frames, axes, now or datetime.now(UTC)),
    }
    if use_time:
        for name, (cutoff, until) in windows.items():
            plans.update(_window_plans(name, events, settings, cutoff, until, truth_kind, axes))
    elif windows:
        plans["truth_pairs"] = _truth_pairs_plan(events, truth_kind, axes)
    collected = dict(zip(plans, pl.collect_all(list(plans.values())), strict=True))

    catalog = catalog_from_frame(collected["items"])
    users = users_from_frame(collected["users"])
    shape = (len(users), len(catalog))
    full = _training_data(collected["full"], shape, catalog, users, settings, seed)
    dataset = Dataset(full=full, split=None, data_start=start, data_end=end, n_events=int(n_events),
                      protocol="none", note="no split", dismissed=_seconds_csr(collected["dismissed"], shape),
                      returns=_seconds_csr(collected["returns"], shape))
    if use_time:
        _time_splits(dataset, collected, windows, shape, settings, seed, truth_kind)
    elif windows:
        _holdout_splits(dataset, collected["truth_pairs"], settings, seed, truth_kind, validation, test_days)
    return dataset


def _dismissed_plan(frames: StoreFrames, axes: _Axes, now: datetime) -> pl.LazyFrame:
    """Each (u, i) pair's latest ``not_interested``, as epoch seconds in ``weight``."""
    latest = dismissals(_present(without_flagged(frames.interactions), now))
    return axes.indexed(latest.with_columns(weight=pl.col("ts").dt.epoch("ms") / 1000.0))


def _seconds_csr(pairs: pl.DataFrame, shape: tuple[int, int]) -> sp.csr_matrix:
    """A float64 CSR of times (float32 would round an epoch to minutes)."""
    matrix = sp.csr_matrix((pairs["weight"].to_numpy().astype(np.float64),
                            (pairs["u"].to_numpy(), pairs["i"].to_numpy())), shape=shape)
    matrix.sort_indices()
    return matrix


class _Axes:
    def __init__(self, users: pl.LazyFrame, items: pl.LazyFrame) -> None:
        self.users, self.items = users, items

    def indexed(self, pairs: pl.LazyFrame) -> pl.LazyFrame:
        return _indexed(pairs, self.users, self.items)


def _present(events: pl.LazyFrame, now: datetime) -> pl.LazyFrame:
    """Events no later than ``now``: one event stamped in the future must not move ``data_end``
    (and with it every window) past the wall clock."""
    return events.filter(pl.col("ts") <= pl.lit(now, dtype=pl.Datetime("us", "UTC")))


def _truth_kind(events: pl.LazyFrame) -> TruthKind:
    """``positive`` when enough users ever gave a positive outcome, else ``engagement``."""
    positive_users = positive_events(events, POSITIVE_ACTIONS, HIGH_RATING).select(
        pl.col("user_id").n_unique()).collect().item()
    return "positive" if positive_users >= MIN_EVAL_USERS else "engagement"


def _truth_events(events: pl.LazyFrame, kind: TruthKind) -> pl.LazyFrame:
    return positive_events(events, POSITIVE_ACTIONS, HIGH_RATING) if kind == "positive" else events


def _windows(end: datetime, test_days: float | None, validation: bool) -> dict[str, tuple[datetime, datetime]]:
    """``{"train": (test cutoff, end)}`` and, with ``validation``, ``{"inner": (cutoff - days, cutoff)}``."""
    if not test_days:
        return {}
    cutoff = end - timedelta(days=test_days)
    windows = {"train": (cutoff, end + timedelta(microseconds=1))}
    if validation:
        windows["inner"] = (cutoff - timedelta(days=test_days), cutoff)
    return windows


def _window_truth(events: pl.LazyFrame, train_pairs: pl.LazyFrame, cutoff: datetime, until: datetime,
                  kind: TruthKind) -> pl.LazyFrame:
    after = events.filter((pl.col("ts") >= cutoff) & (pl.col("ts") < until))
    return (
        _truth_events(after, kind).select("user_id", "item_id").unique()
        .join(train_pairs.select("user_id").unique(), on="user_id", how="semi")
        .join(train_pairs.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
    )


def _window_plans(name: str, events: pl.LazyFrame, settings: EngineSettings, cutoff: datetime, until: datetime,
                  kind: TruthKind, axes: _Axes) -> dict[str, pl.LazyFrame]:
    before = events.filter(pl.col("ts") < cutoff)
    train_pairs = weighted_pairs(before, settings, cutoff)
    truth = _window_truth(events, train_pairs, cutoff, until, kind)
    return {name: axes.indexed(train_pairs), f"{name}_truth": axes.indexed(truth.with_columns(weight=pl.lit(1.0))),
            f"{name}_returns": axes.indexed(returning_pairs(before, settings))}


def _windows_usable(events: pl.LazyFrame, windows: dict[str, tuple[datetime, datetime]], kind: TruthKind,
                    axes: _Axes) -> bool:
    """Whether every window has at least :data:`MIN_EVAL_USERS` users with truth."""
    counts = []
    for cutoff, until in windows.values():
        before = events.filter(pl.col("ts") < cutoff).select("user_id", "item_id").unique()
        truth = _window_truth(events, before, cutoff, until, kind)
        counts.append(truth.select(pl.col("user_id").n_unique()))
    found = [frame.item() for frame in pl.collect_all(counts)]
    log.info("users with truth per time window: %s", found)
    return min(found) >= MIN_EVAL_USERS


def _time_splits(dataset: Dataset, collected: dict[str, pl.DataFrame], windows: dict[str, tuple[datetime, datetime]],
                 shape: tuple[int, int], settings: EngineSettings, seed: int, kind: TruthKind) -> None:
    full = dataset.full
    splits = {}
    for name, (cutoff, _) in windows.items():
        train = _training_data(collected[name], shape, full.catalog, full.users, settings, seed)
        truth = _csr(collected[f"{name}_truth"], shape)
        splits[name] = Split(train=train, truth=truth, cutoff=cutoff, cold_items=~train.known_items,
                             returns=_seconds_csr(collected[f"{name}_returns"], shape))
        log.info("split at %s: %d train pairs, %d truth pairs", cutoff, train.matrix.nnz, truth.nnz)
    dataset.split, dataset.validation = splits["train"], splits.get("inner")
    dataset.protocol = "time"
    days = (windows["train"][1] - windows["train"][0]).total_seconds() / 86_400
    dataset.note = (f"time split: test = the last {days:.3g} days"
                    + (", validation = the window before it" if "inner" in windows else "")
                    + ("" if kind == "positive" else "; truth = any interaction (too few positive outcomes)"))


def _truth_pairs_plan(events: pl.LazyFrame, kind: TruthKind, axes: _Axes) -> pl.LazyFrame:
    return (
        _truth_events(events, kind).group_by("user_id", "item_id").agg(pl.col("ts").max())
        .join(axes.users, on="user_id").join(axes.items, on="item_id")
        .select(pl.col("u").cast(pl.Int64), pl.col("i").cast(pl.Int64), pl.col("ts").dt.epoch("us"))
        .sort("u", "i")
    )


def truth_pairs_of(frames: StoreFrames, full: TrainingData, kind: TruthKind = "positive") -> TruthPairs:
    """Every (user, item) pair that can be truth, on the axes of ``full``, with its last time."""
    axes = _Axes(pl.LazyFrame({"user_id": full.users.users.ids}).with_row_index("u"),
                 pl.LazyFrame({"item_id": full.catalog.items.ids}).with_row_index("i"))
    events = clean_events(frames.interactions, frames.items)
    return _truth_pairs(_truth_pairs_plan(events, kind, axes).collect(), kind)


def _truth_pairs(pairs: pl.DataFrame, kind: TruthKind) -> TruthPairs:
    return TruthPairs(pairs.select("u", "i").to_numpy(), pairs["ts"].to_numpy(), kind)


def _holdout_splits(dataset: Dataset, pairs: pl.DataFrame, settings: EngineSettings, seed: int, kind: TruthKind,
                    validation: bool, test_days: float | None) -> None:
    truth = _truth_pairs(pairs, kind)
    full = dataset.full
    draw = draw_holdout(truth, full.matrix.shape[0], seed=seed, validation=validation)
    held_users = len(np.unique(truth.pairs[draw.test, 0]))
    if held_users < MIN_TRAIN_USERS:
        raise ValueError(
            f"too little to learn from: {held_users} users have 3 or more "
            f"{'positive outcomes' if kind == 'positive' else 'interactions'}; training needs at least "
            f"{MIN_TRAIN_USERS} such users (add data)")
    assert dataset.data_end is not None
    test, inner = holdout_splits(full, truth, draw, settings, dataset.data_end)
    # one time for all (or per-user draws): the pairs' return times are the whole store's
    dataset.split = replace(test, returns=dataset.returns)
    dataset.validation = None if inner is None else replace(inner, returns=dataset.returns)
    dataset.protocol = "holdout"
    one_time = dataset.data_start == dataset.data_end
    reason = ("every interaction has the same time" if one_time
              else f"too few users with truth in a {test_days:g}-day time window")
    dataset.note = (f"per-user holdout ({reason}): test = the latest 20% of each user's "
                    f"{'positive items' if kind == 'positive' else 'items'}"
                    + (" (random among equal times)" if not one_time else " (seeded random draw)")
                    + (", validation drawn the same way from the rest" if validation else ""))


def _indexed(pairs: pl.LazyFrame, user_axis: pl.LazyFrame, item_axis: pl.LazyFrame) -> pl.LazyFrame:
    return pairs.join(user_axis, on="user_id").join(item_axis, on="item_id").select("u", "i", "weight")


def _csr(pairs: pl.DataFrame, shape: tuple[int, int]) -> sp.csr_matrix:
    """A canonical CSR (column indices sorted within each row): the order rows arrive in (files, group-by
    output) must not change the order a model sums a user's items in, or a fit's last float bits."""
    matrix = sp.csr_matrix(
        (pairs["weight"].to_numpy().astype(np.float32), (pairs["u"].to_numpy(), pairs["i"].to_numpy())),
        shape=shape,
    )
    matrix.sort_indices()
    return matrix


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
        provider=items["provider"].to_list() if "provider" in items.columns else None,
        min_age=_column(items, "min_age"), editorial=_column(items, "editorial"), is_free=_column(items, "is_free"),
        capacity=_column(items, "capacity"), series=_column(items, "series_id"),
    )


def _column(frame: pl.DataFrame, column: str) -> list | None:
    """A column's values, or None when the frame lacks it (a catalogue built before it existed)."""
    return frame[column].to_list() if column in frame.columns else None


def users_from_frame(users: pl.DataFrame) -> UserTable:
    return UserTable.from_columns(
        users["user_id"].to_list(), users["region_code"].to_list(), users["age_band"].to_list(),
        users["area_type"].to_list(),
    )
