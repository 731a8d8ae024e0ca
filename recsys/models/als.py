"""Implicit-feedback ALS (implicit's AlternatingLeastSquares) behind the engine interface."""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import Field

from recsys.models.base import ModelConfig, TrainingData
from recsys.models.factors import FactorModel
from recsys.threads import single_threaded_blas

log = logging.getLogger(__name__)


class ALSConfig(ModelConfig):
    factors: int = Field(64, ge=1, le=1024)
    regularization: float = Field(0.05, ge=0)
    iterations: int = Field(15, ge=1)
    refit_iterations: int = Field(4, ge=1, description="iterations of the warm-started refit on all data")
    num_threads: int = Field(0, ge=0, description="0 = all cores")
    show_progress: bool = False


class ALSModel(FactorModel):
    """Weighted matrix factorisation for implicit feedback (Hu, Koren & Volinsky 2008).

    The matrix already holds confidences, so implicit's own ``alpha`` stays 1.
    """

    name = "als"
    Config = ALSConfig
    config: ALSConfig

    def fit(self, data: TrainingData) -> Self:
        return self._fit(data, self.config.iterations, warm=False)

    def refit(self, data: TrainingData) -> Self:
        """Warm-start from the current factors: the axes are the same and one more week of
        data moves the optimum little, so a few iterations reach it."""
        if not self._fitted or self.user_factors.shape[0] != data.matrix.shape[0]:
            return self.fit(data)
        return self._fit(data, self.config.refit_iterations, warm=True)

    def _fit(self, data: TrainingData, iterations: int, *, warm: bool) -> Self:
        cfg = self.config
        with single_threaded_blas():
            model = AlternatingLeastSquares(
                factors=cfg.factors, regularization=cfg.regularization, alpha=1.0, iterations=iterations,
                num_threads=cfg.num_threads, random_state=data.seed, calculate_training_loss=False,
            )
            if warm:
                model.user_factors = self.user_factors.copy()
                model.item_factors = self.item_factors.copy()
            model.fit(data.matrix.astype(np.float32), show_progress=cfg.show_progress)
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.known_items = data.known_items
        self._fitted = True
        log.debug("ALS fitted: %d users x %d items, %d iterations", *data.matrix.shape, iterations)
        return self
