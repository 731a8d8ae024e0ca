"""Evaluation protocols: how a store is cut into what a model learns from and what it is judged on.

Every protocol gives the same shape, a :class:`Split` (train matrix and test truth on the same
axes), so one evaluation scores them all. The training job needs two nested cuts,
train | validation | test: a recipe search sees validation only, the chosen recipe is refitted
on train + validation and scored once on test, so the reported test metrics stay honest.

- **Time windows** (the weekly retrain): a global cutoff ``data_end - test_days``; truth is
  what happened after it. Validation is the window of the same length before the test
  cutoff. Built in :mod:`features.dataset`, where the decay reference moves with the cutoff.
- **Per-user holdout** (this module): for a store without a usable time split (one timestamp
  for everything, as in a yearly export, or too few users active after the cutoff). Each
  eligible user gives a share of their positive items to the test truth: their latest ones,
  ties broken at random with the seed, so a store with a single timestamp gets a seeded random
  draw. Validation is drawn the same way from what remains. All of a user's events on a held
  item leave training.

Truth is the engine's positive outcome (favorite, reserve, attend, rating >= 4). A store with
too few users who ever gave one (a log of views and clicks only) is judged on engagement
instead: any interaction. Both choices are stated in the split's ``note``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import scipy.sparse as sp

from recsys.confidence import to_confidence
from recsys.models.base import TrainingData
from recsys.settings import EngineSettings

log = logging.getLogger(__name__)

Protocol = Literal["time", "holdout"]
TruthKind = Literal["positive", "engagement"]

HOLDOUT_FRACTION = 0.20
"""Share of each eligible user's truth items held out (for the test, then again for validation)."""

HOLDOUT_MIN_ITEMS = 3
"""A user needs this many truth items to give some to a holdout (and keep at least one to learn from)."""

MIN_EVAL_USERS = 50
"""Fewest users with truth for a time window to judge a model on; below it the job holds out per user."""

MIN_TRAIN_USERS = 10
"""Fewest users with a holdout for the store to be trainable at all."""


@dataclass
class Split:
    train: TrainingData
    truth: sp.csr_matrix
    """Truth events (users x items, binary)."""
    cutoff: datetime
    """The time the lists are made for (the availability rules apply at this moment)."""
    cold_items: np.ndarray
    """Items with no training interaction."""
    returns: sp.csr_matrix | None = None
    """When each training pair that may be listed again returns (recsys.repeats); None: never."""

    @property
    def eval_users(self) -> int:
        return int((np.diff(self.truth.indptr) > 0).sum())


@dataclass(frozen=True)
class TruthPairs:
    """(user row, item column) pairs that can be truth, sorted by user, and each pair's last time."""

    pairs: np.ndarray
    last_seen: np.ndarray
    kind: TruthKind


@dataclass(frozen=True)
class HoldoutDraw:
    """Which pairs are held out for the test and for validation (rows of ``TruthPairs.pairs``)."""

    test: np.ndarray
    validation: np.ndarray


def draw_holdout(truth: TruthPairs, n_users: int, *, seed: int, fraction: float = HOLDOUT_FRACTION,
                 min_items: int = HOLDOUT_MIN_ITEMS, validation: bool = True) -> HoldoutDraw:
    """The test holdout, then (with ``validation``) a validation holdout from what remains."""
    test = _draw(truth.pairs, n_users, fraction, min_items, seed, truth.last_seen)
    if not validation:
        return HoldoutDraw(test=test, validation=test[:0])
    remaining = np.setdiff1d(np.arange(len(truth.pairs)), test)
    inner = _draw(truth.pairs[remaining], n_users, fraction, min_items, seed + 1, truth.last_seen[remaining])
    return HoldoutDraw(test=test, validation=remaining[inner])


def _draw(pairs: np.ndarray, n_users: int, fraction: float, min_items: int, seed: int,
          recency: np.ndarray) -> np.ndarray:
    """Row numbers of ``pairs`` (sorted by user) held out: per user with at least ``min_items``,
    ``max(1, round(fraction * n))`` of them, latest first, random among ties."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    users = pairs[:, 0]
    per_user = np.bincount(users, minlength=n_users)
    n_held = np.where(per_user >= min_items, np.maximum(1, np.rint(fraction * per_user)), 0).astype(np.int64)
    tiebreak = np.random.default_rng(seed).random(len(pairs))
    order = np.lexsort((tiebreak, -recency, users))
    starts = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    rank = np.empty(len(pairs), dtype=np.int64)
    rank[order] = np.arange(len(pairs)) - starts[users[order]]
    return np.flatnonzero(rank < n_held[users])


def holdout_split(full: TrainingData, truth: TruthPairs, held: np.ndarray, removed: np.ndarray,
                  settings: EngineSettings, cutoff: datetime) -> Split:
    """Train = ``full`` without the pairs ``removed``; truth = the pairs ``held``."""
    shape = full.matrix.shape
    weights = without_pairs(full.weights, _keys(truth.pairs[removed], shape[1]))
    train = TrainingData(matrix=to_confidence(weights, settings.confidence, settings.alpha), weights=weights,
                         catalog=full.catalog, users=full.users, seed=full.seed)
    picked = truth.pairs[held]
    matrix = sp.csr_matrix((np.ones(len(picked), np.float32), (picked[:, 0], picked[:, 1])), shape=shape)
    return Split(train=train, truth=matrix, cutoff=cutoff, cold_items=~train.known_items)


def holdout_splits(full: TrainingData, truth: TruthPairs, draw: HoldoutDraw, settings: EngineSettings,
                   cutoff: datetime) -> tuple[Split, Split | None]:
    """(train | test, inner train | validation): the inner train loses both holdouts."""
    test = holdout_split(full, truth, draw.test, draw.test, settings, cutoff)
    if len(draw.validation) == 0:
        return test, None
    both = np.concatenate([draw.test, draw.validation])
    return test, holdout_split(full, truth, draw.validation, both, settings, cutoff)


def _keys(pairs: np.ndarray, n_cols: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n_cols + pairs[:, 1]


def without_pairs(matrix: sp.csr_matrix, keys: np.ndarray) -> sp.csr_matrix:
    """``matrix`` with the entries at ``row * n_cols + col`` in ``keys`` removed."""
    coo = matrix.tocoo()
    kept = ~np.isin(coo.row.astype(np.int64) * matrix.shape[1] + coo.col, keys)
    return sp.csr_matrix((coo.data[kept], (coo.row[kept], coo.col[kept])), shape=matrix.shape, dtype=np.float32)


def with_confidence(data: TrainingData, settings: EngineSettings) -> TrainingData:
    """The same weights under another confidence transform (cheap: no store read)."""
    return TrainingData(matrix=to_confidence(data.weights, settings.confidence, settings.alpha),
                        weights=data.weights, catalog=data.catalog, users=data.users, seed=data.seed)


def split_with_confidence(split: Split, settings: EngineSettings) -> Split:
    """:func:`with_confidence` applied to a split's training part."""
    return Split(train=with_confidence(split.train, settings), truth=split.truth, cutoff=split.cutoff,
                 cold_items=split.cold_items, returns=split.returns)
