"""Recency-weighted popularity, globally, per region and per segment (region x age band).

It is the baseline every model must beat, and the fallback for users the model cannot
personalise. Segment popularity is shrunk toward the global one so that a small segment
(a few dozen seniors in one district) does not rank by the noise of a handful of clicks:

    pop_s(i) = (w_s(i) + m · w(i) / W) / (W_s + m)

with w_s(i) the decayed weight that segment s put on item i, W_s its total, w(i), W the
global ones and m the shrinkage (in weight units).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self, cast

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.models.base import ModelConfig, PopularityScores, Recommender, TrainingData
from recsys.vocab import code_of


class PopularityConfig(ModelConfig):
    shrinkage: float = Field(50.0, ge=0, description="m: weight units pulling a segment toward global")
    by_segment: bool = Field(True, description="score known users by their segment's popularity")


class PopularityModel(Recommender):
    name = "popularity"
    Config = PopularityConfig
    config: PopularityConfig

    def fit(self, data: TrainingData) -> Self:
        weights = data.weights.tocsr().astype(np.float64)
        users = data.users
        self.global_weight = np.asarray(weights.sum(axis=0)).ravel()
        self.user_segment = users.segments()
        self.user_region = users.region.astype(np.int64)
        self.segment_weight = _group_sums(weights, self.user_segment, users.n_segments)
        self.region_weight = _group_sums(weights, self.user_region, max(len(users.regions), 1))
        self.regions = np.array(users.regions, dtype=str)
        self.ages = np.array(users.ages, dtype=str)
        self._memo: dict[tuple[Any, ...], np.ndarray | None] = {}
        self._fitted = True
        return self

    # ---- public fallbacks ------------------------------------------------------------
    def global_scores(self) -> np.ndarray:
        return cast(np.ndarray, self._remembered(("global",), self._global))  # never None: see _global

    def _global(self) -> np.ndarray:
        total = self.global_weight.sum()
        return (self.global_weight / total if total > 0 else self.global_weight).astype(np.float32)

    def _remembered(self, key: tuple[Any, ...], compute: Callable[[], np.ndarray | None]) -> np.ndarray | None:
        """Fallback scores are asked for on every request and fixed once fitted: compute each
        once, and hand out read-only arrays so no caller can change what the next one gets."""
        memo: dict[tuple[Any, ...], np.ndarray | None] = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            scores = compute()
            if scores is not None:
                scores.flags.writeable = False
            memo[key] = scores
        return memo[key]

    def segment_scores(self, region: str | None, age_band: str | None) -> np.ndarray | None:
        """Shrunk popularity of region x age band, or None if the segment is unknown/empty."""
        r, a = code_of(list(self.regions), region), code_of(list(self.ages), age_band)
        if r < 0 or a < 0:
            return None
        segment = r * len(self.ages) + a
        return self._remembered(("segment", segment), lambda: self._shrunk(self.segment_weight[segment]))

    def region_scores(self, region: str | None) -> np.ndarray | None:
        r = code_of(list(self.regions), region)
        return None if r < 0 else self._remembered(("region", r), lambda: self._shrunk(self.region_weight[r]))

    def _shrunk(self, group_weight: np.ndarray) -> np.ndarray | None:
        total = group_weight.sum()
        if total <= 0:
            return None
        m = self.config.shrinkage
        shrunk: np.ndarray = ((group_weight + m * self.global_scores()) / (total + m)).astype(np.float32)
        return shrunk

    # ---- interface -------------------------------------------------------------------
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        users = self.check_rows(users, history)
        base = self.global_scores()
        scores = np.tile(base, (len(users), 1))
        if not self.config.by_segment:
            return scores
        segments = np.where(users >= 0, self.user_segment[np.clip(users, 0, None)], -1)
        for segment in np.unique(segments[segments >= 0]):
            def shrink(s: Any = segment) -> np.ndarray | None:  # the default binds this loop's segment
                return self._shrunk(self.segment_weight[s])

            shrunk = self._remembered(("segment", int(segment)), shrink)
            if shrunk is not None:
                scores[segments == segment] = shrunk
        return scores

    def popularity_part(self) -> PopularityScores:
        return self

    def item_similarity_matrix(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """No notion of item similarity: all NaN, without asking item by item."""
        return np.full((len(items), len(others)), np.nan, dtype=np.float32)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "global_weight": self.global_weight, "segment_weight": self.segment_weight,
            "region_weight": self.region_weight, "user_segment": self.user_segment,
            "user_region": self.user_region, "regions": self.regions, "ages": self.ages,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        for key, value in arrays.items():
            setattr(self, key, value)
        self._memo = {}


def _group_sums(weights: sp.csr_matrix, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Dense (n_groups, n_items) sums of the rows of ``weights`` per group (-1 = none)."""
    rows = np.flatnonzero(groups >= 0)
    indicator = sp.csr_matrix(
        (np.ones(len(rows)), (groups[rows], rows)), shape=(n_groups, weights.shape[0])
    )
    return np.asarray((indicator @ weights).todense())
