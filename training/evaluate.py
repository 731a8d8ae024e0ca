"""Offline evaluation on the time split, with the same business rules as serving.

Recommendations are produced as they would have been served at the cutoff (no ended or
hidden items, no already-engaged items) for every user with test truth, and scored with
``recsys.metrics``: accuracy at 10 and 20, coverage, novelty, category diversity,
cold-item recall, NDCG@10 per segment (area type, age band, region), the rural/urban NDCG
ratio, and the share of slots going to rural-venue items against their catalog share. With
exposure floors configured, each group's share against its floor and the NDCG cost of
meeting them (:mod:`training.exposure_eval`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from features.splits import Split
from recsys import metrics
from recsys.bundle import ModelBundle
from recsys.delivery import DeliveryEngine
from recsys.exposure import majority_regions
from recsys.models.base import Recommender
from recsys.settings import EngineSettings
from training.exposure_eval import floor_metrics

log = logging.getLogger(__name__)

K_VALUES = (10, 20)
SEGMENT_FACETS = ("area_type", "age_band", "region_code")


@dataclass
class Evaluation:
    metrics: dict[str, float]
    segments: list[dict[str, object]] = field(default_factory=list)
    n_users: int = 0
    per_user: np.ndarray | None = None
    """NDCG@10 of each evaluated user (users with truth, in row order): paired comparisons of models."""

    @property
    def ndcg10(self) -> float:
        return self.metrics.get("ndcg@10", float("nan"))

    @property
    def rural_urban_ratio(self) -> float:
        return self.metrics.get("rural_urban_ndcg_ratio", float("nan"))


def evaluate(model: Recommender, split: Split, settings: EngineSettings, *, segments: bool = True) -> Evaluation:
    """Score ``model`` (fitted on ``split.train``) against ``split.truth``; without ``segments``
    only the accuracy and catalogue metrics (what a recipe search compares)."""
    train = split.train
    engine, eval_rows, recs = evaluation_lists(model, split, settings)
    truth = split.truth[eval_rows]
    item_users = np.diff(train.matrix.tocsc().indptr)
    result = metrics.evaluate_ranking(
        recs, truth, K_VALUES, item_counts=item_users, n_users_total=train.matrix.shape[0],
        item_category=train.catalog.category, cold_items_mask=split.cold_items,
    )
    per_user = metrics.per_user_ndcg(recs, truth, 10)
    if not segments:
        return Evaluation(metrics=result, n_users=len(eval_rows), per_user=per_user)
    rows = _segment_rows(per_user, train.users, eval_rows)
    result.update(_segment_metrics(rows))
    result.update(_rural_slots(recs, split))
    if settings.exposure.enabled:
        result.update(floor_metrics(engine, eval_rows, truth, split.cutoff.timestamp(), settings.exposure))
    return Evaluation(metrics=result, segments=rows, n_users=len(eval_rows), per_user=per_user)


def evaluation_lists(model: Recommender, split: Split,
                     settings: EngineSettings) -> tuple[DeliveryEngine, np.ndarray, np.ndarray]:
    """The engine, the users with truth and their lists (``max(K_VALUES)`` items) as they would have been
    served at the cutoff: the delivery rules of every list, the minors rule and the repeat policy included."""
    train = split.train
    eval_rows = np.flatnonzero(np.diff(split.truth.indptr) > 0)
    if len(eval_rows) == 0:
        raise ValueError("the test window has no positive events by known users; lower --test-days or add data")
    engine = DeliveryEngine(ModelBundle(model, train.catalog, train.users, train.weights, settings,
                                        returns=split.returns))
    recs, _ = engine.top_n_for_rows(eval_rows, max(K_VALUES), at=split.cutoff.timestamp())
    return engine, eval_rows, recs


def _segment_rows(per_user: np.ndarray, users, rows: np.ndarray) -> list[dict[str, object]]:
    table = []
    for facet in SEGMENT_FACETS:
        labels = users.labels(facet)[rows]
        means = metrics.segment_means(per_user, labels)
        counts = metrics.segment_counts(per_user, labels)
        for label, value in means.items():
            table.append({"facet": facet, "segment": label or "(unknown)", "ndcg@10": value,
                          "users": counts.get(label, 0)})
    return table


def _segment_metrics(segments: list[dict[str, object]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in segments:
        key = f"ndcg@10.{row['facet']}.{row['segment']}"
        out[key] = float(row["ndcg@10"])  # type: ignore[arg-type]
    rural = out.get("ndcg@10.area_type.rural", float("nan"))
    urban = out.get("ndcg@10.area_type.urban", float("nan"))
    out["rural_urban_ndcg_ratio"] = metrics.ratio(rural, urban)
    return out


def _rural_slots(recs: np.ndarray, split: Split) -> dict[str, float]:
    """Slots going to items in rural-majority districts vs those items' share of the live catalog."""
    catalog, users = split.train.catalog, split.train.users
    rural_regions = majority_regions(users, "rural")
    rural_items = np.array([catalog.regions[r] in rural_regions if r >= 0 else False for r in catalog.region])
    live = catalog.available_at(split.cutoff.timestamp())
    return {
        "rural_venue_slot_share@10": metrics.slot_share(recs, rural_items, 10),
        "rural_venue_catalog_share": metrics.catalog_share(rural_items[live]) if live.any() else float("nan"),
    }
