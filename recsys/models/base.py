"""The one small interface every model implements, and what it is trained on.

A model turns user histories into a score for every catalog item. Ranking, business
filters, diversity and fallbacks live outside the models (``recsys.delivery``), so every
model gets them for free and they are tested once.

Conventions:
- ``score(users, history)``: ``users`` are row indices of the training user axis, or ``-1``
  for a user the model must fold in from ``history`` alone (a new user, a user whose history
  changed since training, or a region's pooled taste). ``history`` holds the matching rows
  (confidence weights, users x items). The result is dense float32 (len(users), n_items);
  ``-inf`` marks items the model cannot score (e.g. a pure collaborative model and an item
  nobody has interacted with yet).
- Models persist as ``model.npz`` (``allow_pickle=False``) + ``model.json``; never pickle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from recsys.catalog import Catalog
from recsys.users import UserTable


@dataclass
class TrainingData:
    """Everything a model may learn from. ``matrix`` and ``weights`` share both axes."""

    matrix: sp.csr_matrix
    """Confidence per user x item (float32), after action weights, decay and transform."""
    weights: sp.csr_matrix
    """Decayed action weights before the confidence transform (popularity uses these)."""
    catalog: Catalog
    users: UserTable
    seed: int = 0

    def __post_init__(self) -> None:
        n_users, n_items = self.matrix.shape
        if self.weights.shape != self.matrix.shape:
            raise ValueError(f"weights shape {self.weights.shape} != matrix shape {self.matrix.shape}")
        if n_items != len(self.catalog):
            raise ValueError(f"matrix has {n_items} item columns but the catalog has {len(self.catalog)} items")
        if n_users != len(self.users):
            raise ValueError(f"matrix has {n_users} user rows but the user table has {len(self.users)} users")

    @property
    def known_items(self) -> np.ndarray:
        """Items with at least one training interaction."""
        return np.diff(self.matrix.tocsc().indptr) > 0


class ModelConfig(BaseModel):
    """Base of every model's hyperparameters (typed, validated, from TOML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Recommender(ABC):
    """Fit on :class:`TrainingData`, then score items for users."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None) -> None:
        self.config = config if isinstance(config, ModelConfig) else self.Config(**(config or {}))
        self._fitted = False

    # ---- training --------------------------------------------------------------------
    @abstractmethod
    def fit(self, data: TrainingData) -> Self:
        """Learn from ``data``; returns self."""

    def refit(self, data: TrainingData) -> Self:
        """Fit again on more data with the same axes; models may warm-start here."""
        return self.fit(data)

    # ---- scoring ---------------------------------------------------------------------
    @abstractmethod
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Dense scores (len(users), n_items); see the module docstring."""

    def item_similarity(self, item: int) -> np.ndarray | None:
        """Similarity of ``item`` to every item, or None if the model has no such notion."""
        return None

    # ---- persistence -----------------------------------------------------------------
    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """The learned state as named arrays."""

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the learned state from :meth:`_arrays` output."""

    def save(self, directory: Path) -> None:
        self._require_fitted()
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "model.npz", **self._arrays())
        meta = {"name": self.name, "params": self.config.model_dump()}
        (directory / "model.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load_state(cls, directory: Path, params: dict[str, Any]) -> Self:
        model = cls(params)
        with np.load(directory / "model.npz", allow_pickle=False) as stored:
            model._restore({key: stored[key] for key in stored.files})
        model._fitted = True
        return model

    # ---- helpers ---------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self._fitted:
            raise ValueError(f"{self.name} model is not fitted; call fit() first")

    @staticmethod
    def check_rows(users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64).ravel()
        if history.shape[0] != len(users):
            raise ValueError(f"history has {history.shape[0]} rows for {len(users)} users")
        return users


def csr_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays for npz storage."""
    m = matrix.tocsr()
    return {
        f"{prefix}_data": m.data, f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr, f"{prefix}_shape": np.array(m.shape),
    }


def csr_from(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape
    )


def cosine_to_all(vectors: np.ndarray, item: int) -> np.ndarray:
    """Cosine similarity of row ``item`` to every row of ``vectors``."""
    norms = np.linalg.norm(vectors, axis=1)
    target = vectors[item]
    denominator = norms * (norms[item] or 1.0)
    return np.divide(vectors @ target, denominator, out=np.zeros(len(vectors), np.float32), where=denominator > 0)
