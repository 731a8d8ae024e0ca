"""Item-based nearest neighbours (implicit's cosine / BM25 item-item recommenders)."""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
from pydantic import Field

from recsys.models.base import ModelConfig, Recommender, TrainingData, csr_arrays, csr_from


class ItemKNNConfig(ModelConfig):
    neighbours: int = Field(100, ge=1)
    similarity: Literal["cosine", "bm25"] = "bm25"
    k1: float = Field(1.2, gt=0)
    b: float = Field(0.75, ge=0, le=1)
    num_threads: int = Field(0, ge=0)


class ItemKNNModel(Recommender):
    """score(u, i) = Σ_j history(u, j) · sim(j, i) over each item's K nearest neighbours."""

    name = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig

    def fit(self, data: TrainingData) -> Self:
        cfg = self.config
        if cfg.similarity == "bm25":
            model = BM25Recommender(K=cfg.neighbours, K1=cfg.k1, B=cfg.b, num_threads=cfg.num_threads)
        else:
            model = CosineRecommender(K=cfg.neighbours, num_threads=cfg.num_threads)
        model.fit(data.matrix.astype(np.float32), show_progress=False)
        self.similarity = sp.csr_matrix(model.similarity, dtype=np.float32)
        self.known_items = data.known_items
        self._fitted = True
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        self.check_rows(users, history)
        scores = np.asarray((history @ self.similarity).todense(), dtype=np.float32)
        scores[:, ~self.known_items] = -np.inf
        return scores

    def item_similarity(self, item: int) -> np.ndarray | None:
        if not self.known_items[item]:
            return None
        row: np.ndarray = self.similarity.getrow(item).toarray().ravel().astype(np.float32)
        peak = row.max(initial=0.0)
        return row / peak if peak > 0 else row

    def item_similarity_matrix(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """:meth:`item_similarity` for these pairs only: the items' sparse rows, never a dense catalog row."""
        items, others = np.asarray(items, dtype=np.int64), np.asarray(others, dtype=np.int64)
        rows = self.similarity[items]
        peaks = np.maximum(rows.max(axis=1).toarray().ravel(), 0).astype(np.float32)
        pairs = rows[:, others].toarray().astype(np.float32, copy=False)
        out: np.ndarray = np.divide(pairs, peaks[:, None], out=pairs.copy(), where=peaks[:, None] > 0)
        out[~self.known_items[items]] = np.nan
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**csr_arrays("similarity", self.similarity), "known_items": self.known_items}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity = csr_from("similarity", arrays)
        self.known_items = arrays["known_items"].astype(bool)
