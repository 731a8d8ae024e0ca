"""EASE: the closed-form linear item-item autoencoder (Steck 2019).

B = I − P · diagMat(1 ⊘ diag(P)),  P = (XᵀX + λI)⁻¹, so diag(B) = 0 and score = X · B.
One dense items x items inversion: fine up to ~20k items (1.6 GB in float32), refused above.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.models.base import ModelConfig, Recommender, TrainingData, cosine_to_all
from recsys.threads import single_threaded_blas

MAX_EASE_ITEMS = 20_000


class EASEConfig(ModelConfig):
    l2: float = Field(200.0, gt=0, description="λ, the ridge on the Gram matrix")
    binary: bool = Field(True, description="fit on 0/1 interactions instead of confidences")


class EASEModel(Recommender):
    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def fit(self, data: TrainingData) -> Self:
        n_items = data.matrix.shape[1]
        if n_items > MAX_EASE_ITEMS:
            raise ValueError(f"EASE needs a dense {n_items}x{n_items} inverse; limit is {MAX_EASE_ITEMS} items")
        x = data.matrix.astype(np.float32)
        if self.config.binary:
            x = x.copy()
            x.data[:] = 1.0
        # Many BLAS threads are fine here (no implicit underneath), but keep runs reproducible.
        with single_threaded_blas():
            gram = np.asarray((x.T @ x).todense(), dtype=np.float64)
            gram[np.diag_indices(n_items)] += self.config.l2
            inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        weights[np.diag_indices(n_items)] = 0.0
        self.weights = weights.astype(np.float32)
        self.known_items = data.known_items
        self._fitted = True
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        self.check_rows(users, history)
        x = history.astype(np.float32)
        if self.config.binary:
            x = x.copy()
            x.data[:] = 1.0
        scores = np.asarray(x @ self.weights, dtype=np.float32)
        scores[:, ~self.known_items] = -np.inf
        return scores

    def item_similarity(self, item: int) -> np.ndarray | None:
        if not self.known_items[item]:
            return None
        similarity = cosine_to_all(self.weights.T, item)
        similarity[~self.known_items] = 0.0
        return similarity

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "known_items": self.known_items}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights = arrays["weights"]
        self.known_items = arrays["known_items"].astype(bool)
