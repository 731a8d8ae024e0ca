"""Exposure floors in training: calibrate the re-ranker's bonuses and measure what they cost.

Evaluation re-ranks the evaluated users' candidate lists (:mod:`recsys.exposure`) with
bonuses calibrated on those lists (calibration reads scores only, never the test truth) and
reports, per group, its share of the top-10 slots before and after against its floor, and
NDCG@10 before and after (``exposure.ndcg_cost`` = relative loss). The refitted model's
bonuses are calibrated on the lists of a sample of all known users at the end of the data
and travel in the bundle's manifest (``exposure``), where serving reads them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys import metrics
from recsys.delivery import DeliveryEngine
from recsys.exposure import MANIFEST_KEY, ExposureSettings, Floors, calibrate, rerank, shares

log = logging.getLogger(__name__)

SLOTS = 10
__all__ = ["MANIFEST_KEY", "calibrated_manifest", "floor_metrics", "floor_misses"]


def floor_metrics(engine: DeliveryEngine, rows: np.ndarray, truth: sp.csr_matrix, at: float,
                  settings: ExposureSettings) -> dict[str, float]:
    """Shares against floors and the NDCG@10 cost of meeting them, for the evaluated users ``rows``."""
    items, scores = engine.top_n_for_rows(rows, settings.depth, at=at)
    floors = calibrate(items, scores, Floors.of(settings, engine.catalog, engine.users), SLOTS)
    before, after = items[:, :SLOTS], rerank(items, scores, floors, SLOTS)
    ndcg_before, ndcg_after = metrics.ndcg_at_k(before, truth, SLOTS), metrics.ndcg_at_k(after, truth, SLOTS)
    out: dict[str, float] = {
        "exposure.ndcg@10.before": ndcg_before,
        "exposure.ndcg@10.after": ndcg_after,
        "exposure.ndcg_cost": 1.0 - ndcg_after / ndcg_before if ndcg_before > 0 else 0.0,
    }
    for name, floor, share_before, share_after, bonus in zip(
            floors.names, floors.floors, shares(before, floors), shares(after, floors), floors.bonus, strict=True):
        out[f"exposure.{name}.floor"] = float(floor)
        out[f"exposure.{name}.share_before@10"] = float(share_before)
        out[f"exposure.{name}.share@10"] = float(share_after)
        out[f"exposure.{name}.bonus"] = float(bonus)
    return out


def floor_misses(figures: dict[str, float], settings: ExposureSettings) -> list[str]:
    """Groups whose re-ranked share is more than the tolerance below their floor, as sentences."""
    misses = []
    for name, group in settings.groups.items():
        share = figures.get(f"exposure.{name}.share@10")
        if share is not None and share < group.min_share - settings.tolerance:
            misses.append(f"exposure group {name}: share {share:.3f} < floor {group.min_share:.3f} "
                          f"- {settings.tolerance:.3f}")
    return misses


def calibrated_manifest(engine: DeliveryEngine, at: float, settings: ExposureSettings,
                        seed: int = 0) -> dict[str, Any]:
    """The bundle manifest's ``exposure`` entry: bonuses calibrated on a sample of known users."""
    known = np.flatnonzero(np.diff(engine.bundle.weights.indptr) > 0)
    if len(known) > settings.sample_users:
        known = np.sort(np.random.default_rng(seed).choice(known, settings.sample_users, replace=False))
    floors = Floors.of(settings, engine.catalog, engine.users)
    if len(known):
        items, scores = engine.top_n_for_rows(known, settings.depth, at=at)
        floors = calibrate(items, scores, floors, SLOTS)
    return {"bonus": floors.bonus_by_name(), "calibrated_on_users": int(len(known))}
