"""Shared machinery of matrix-factorisation models: scoring and user fold-in.

Fold-in solves the ALS normal equations for one user against fixed item factors
(Hu, Koren & Volinsky 2008):  (YᵀY + Yᵀ(Cᵤ − I)Y + λI) xᵤ = YᵀCᵤ p(u),  with Cᵤ the
user's confidences and p(u) = 1 on the items they touched. It is exact for ALS and a sound
approximation for BPR, and it is what lets a new user get personal results after a few
interactions without retraining.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.models.base import FactorView, Recommender, cosine_pairs, inverse_norms


def fold_in(history: sp.csr_matrix, item_factors: np.ndarray, regularization: float) -> np.ndarray:
    """User factors (len(history), k) fitted to each history row against ``item_factors``."""
    k = item_factors.shape[1]
    gram = item_factors.T @ item_factors
    ridge = regularization * np.eye(k, dtype=np.float64)
    out = np.zeros((history.shape[0], k), dtype=np.float32)
    for row in range(history.shape[0]):
        start, end = history.indptr[row], history.indptr[row + 1]
        if start == end:
            continue  # no history: a zero vector scores every item 0 (caller falls back)
        columns = history.indices[start:end]
        confidence = history.data[start:end].astype(np.float64)
        touched = item_factors[columns].astype(np.float64)
        a = gram + (touched.T * (confidence - 1.0)) @ touched + ridge
        b = touched.T @ confidence
        out[row] = np.linalg.solve(a, b)
    return out


class FactorModel(Recommender):
    """A model whose scores are user_factors · item_factorsᵀ."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    known_items: np.ndarray

    def _fold_in_regularization(self) -> float:
        return float(getattr(self.config, "regularization", 0.05))

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Stored factors for known users, folded-in factors for ``-1`` rows."""
        users = self.check_rows(users, history)
        vectors = np.zeros((len(users), self.item_factors.shape[1]), dtype=np.float32)
        known = (users >= 0) & (users < self.user_factors.shape[0])
        vectors[known] = self.user_factors[users[known]]
        if (~known).any():
            vectors[~known] = fold_in(history[np.flatnonzero(~known)], self.item_factors,
                                      self._fold_in_regularization())
        return vectors

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        scores: np.ndarray = self.user_vectors(users, history) @ self.item_factors.T
        scores[:, ~self.known_items] = -np.inf  # nothing learned about these items
        return scores.astype(np.float32, copy=False)

    def factor_view(self) -> FactorView:
        """The model itself: its scores are exactly these inner products."""
        return self

    def item_similarity(self, item: int) -> np.ndarray | None:
        if not self.known_items[item]:
            return None
        inverse = self._item_inverse_norms()
        cosine: np.ndarray = (self.item_factors @ self.item_factors[item]) * inverse * inverse[item]
        similarity = cosine.astype(np.float32)
        similarity[~self.known_items] = 0.0
        return similarity

    def item_similarity_matrix(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Cosine of item factors for these pairs only, with the norms computed once per model."""
        items, others = np.asarray(items, dtype=np.int64), np.asarray(others, dtype=np.int64)
        similarity = cosine_pairs(self.item_factors, self._item_inverse_norms(), items, others)
        similarity[:, ~self.known_items[others]] = 0.0
        similarity[~self.known_items[items]] = np.nan
        return similarity

    def _item_inverse_norms(self) -> np.ndarray:
        """:func:`recsys.models.base.inverse_norms` of the current item factors (recomputed after a fit)."""
        cached = self.__dict__.get("_inverse_norms")
        if cached is None or cached[0] is not self.item_factors:
            cached = (self.item_factors, inverse_norms(self.item_factors))
            self._inverse_norms = cached
        return cached[1]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors,
                "known_items": self.known_items}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"]
        self.item_factors = arrays["item_factors"]
        self.known_items = arrays["known_items"].astype(bool)
