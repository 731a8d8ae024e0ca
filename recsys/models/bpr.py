"""Bayesian Personalised Ranking (implicit's BPR) behind the engine interface."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from implicit.cpu.bpr import BayesianPersonalizedRanking
from pydantic import Field

from recsys.models.base import ModelConfig, TrainingData
from recsys.models.factors import FactorModel, fold_in
from recsys.threads import single_threaded_blas


class BPRConfig(ModelConfig):
    factors: int = Field(64, ge=1, le=1024)
    learning_rate: float = Field(0.05, gt=0)
    regularization: float = Field(0.01, ge=0)
    iterations: int = Field(100, ge=1)
    # One thread: BPR's parallel SGD is lock-free and so not reproducible across runs.
    num_threads: int = Field(1, ge=0)
    show_progress: bool = False


class BPRModel(FactorModel):
    """implicit stores the item bias as the last factor column (users carry a constant 1)."""

    name = "bpr"
    Config = BPRConfig
    config: BPRConfig

    def fit(self, data: TrainingData) -> Self:
        cfg = self.config
        model = BayesianPersonalizedRanking(
            factors=cfg.factors, learning_rate=cfg.learning_rate, regularization=cfg.regularization,
            iterations=cfg.iterations, num_threads=cfg.num_threads, random_state=data.seed,
        )
        with single_threaded_blas():
            model.fit(data.matrix.astype(np.float32), show_progress=cfg.show_progress)
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.known_items = data.known_items
        self._fitted = True
        return self

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        users = self.check_rows(users, history)
        vectors = super().user_vectors(np.where(users >= 0, users, 0), history)
        unknown = np.flatnonzero(users < 0)
        if len(unknown):
            # Fold in against the latent part only; the bias column keeps its constant 1.
            latent = fold_in(history[unknown], self.item_factors[:, :-1], self.config.regularization + 0.01)
            vectors[unknown, :-1] = latent
            vectors[unknown, -1] = 1.0
        return vectors
