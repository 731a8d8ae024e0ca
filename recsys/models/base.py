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
- What ranking code needs beyond scores it asks the model for, never its class: the factors
  an approximate index can search (:meth:`Recommender.factor_view`, with
  :meth:`Recommender.factor_blend` when the score adds other terms to them) and the
  popularity the fallbacks rank by (:meth:`Recommender.popularity_part`). A new model
  answers these (or keeps the defaults: exact scoring, popularity fitted from the data) and
  needs no change to ranking, delivery or the index.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

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
        known: np.ndarray = np.diff(self.matrix.tocsc().indptr) > 0
        return known


class FactorView(Protocol):
    """User and item factors whose inner products are a model's collaborative scores: what an
    approximate inner-product index (:mod:`recsys.ann`) is built over and searches with."""

    item_factors: np.ndarray
    """float32 (n_items, k)."""
    known_items: np.ndarray
    """bool (n_items,): items the factors were learned for; the others score ``-inf``."""

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """(len(users), k) factors, ``users`` and ``history`` as in :meth:`Recommender.score`."""
        ...


@dataclass(frozen=True)
class FactorBlend:
    """One user's score as a blend around a model's :class:`FactorView`:
    ``factor_weight`` x the view's inner products divided by the user's best one (items the
    view does not know count as 0 there, and score 0), plus ``weight x scores`` of each term
    (dense over the catalog, finite)."""

    factor_weight: float
    terms: tuple[tuple[float, np.ndarray], ...]


@dataclass(frozen=True)
class ContentView:
    """How a model scores an item by its facets alone: what it can say about an item it never saw.

    ``facets`` are the trained items' L2-normalised facet rows (:meth:`recsys.catalog.Catalog.feature_matrix`
    with ``facet_weights``); an item's content score for a user is ``weight`` x the cosine of
    its facet row with the user's profile (the history-weighted sum of the facet rows)."""

    facets: sp.csr_matrix
    facet_weights: dict[str, float]
    weight: float


class PopularityScores(Protocol):
    """Popularity, the fallback ranking for a user or region a model cannot personalise."""

    def global_scores(self) -> np.ndarray:
        """Over the whole city, one score per item."""
        ...

    def segment_scores(self, region: str | None, age_band: str | None) -> np.ndarray | None:
        """Within region x age band, or None if that segment is unknown or empty."""
        ...

    def region_scores(self, region: str | None) -> np.ndarray | None:
        """Within a region, or None if it is unknown or empty."""
        ...

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Each user's segment popularity, as :meth:`Recommender.score`."""
        ...


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

    def item_similarity_matrix(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """``item_similarity(i)[others]`` for each of ``items``, as (len(items), len(others)) float32;
        a row is NaN where ``item_similarity(i)`` is None. Explaining a list needs only these few
        pairs (chosen items x the user's history), so models override this to skip the catalog."""
        others = np.asarray(others, dtype=np.int64)
        out = np.full((len(items), len(others)), np.nan, dtype=np.float32)
        for row, item in enumerate(np.asarray(items, dtype=np.int64).tolist()):
            similarity = self.item_similarity(item)
            if similarity is not None:
                out[row] = similarity[others]
        return out

    # ---- what ranking asks of a model -------------------------------------------------
    def factor_view(self) -> FactorView | None:
        """The factors behind the model's scores that an approximate index may search, or None
        (the default): the model has none, and is always scored exactly."""
        return None

    def factor_blend(self, users: np.ndarray, history: sp.csr_matrix) -> FactorBlend | None:
        """Asked only of a model with a :meth:`factor_view`, for one user (``users`` and
        ``history`` one row, as in :meth:`score`): None (the default) when the score is the
        view's inner products themselves; else how the score blends them with other terms."""
        return None

    def content_view(self) -> ContentView | None:
        """How the model scores items by their facets, or None (the default): the model has no
        content path, and an item added since training stays unscored until it is retrained."""
        return None

    def popularity_part(self) -> PopularityScores | None:
        """The popularity the model holds (the model itself, or a part of it), for the
        fallbacks; None (the default): the caller fits one from the same data."""
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
        arrays: dict[str, Any] = self._arrays()  # numpy's stub would match a dict's values against allow_pickle
        np.savez(directory / "model.npz", **arrays)
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


def row_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position in ``rows``, column, value) of every stored entry of those rows of a CSR matrix.

    Plain numpy on the CSR arrays: for the handful of rows one request touches, scipy's
    per-call overhead (validation, copies) costs far more than the arithmetic.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = matrix.indptr[rows].astype(np.int64)
    lengths = matrix.indptr[rows + 1].astype(np.int64) - starts
    first = np.cumsum(lengths) - lengths  # where each row's entries begin in the output
    offsets = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))
    return np.repeat(np.arange(len(rows)), lengths), matrix.indices[offsets], matrix.data[offsets]


def sparse_row_dots(matrix: sp.csr_matrix, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``matrix[left] @ matrix[right].T`` as dense float32, via the columns the rows actually use."""
    left_pos, left_cols, left_vals = row_entries(matrix, left)
    right_pos, right_cols, right_vals = row_entries(matrix, right)
    columns, inverse = np.unique(np.concatenate([left_cols, right_cols]), return_inverse=True)
    a = np.zeros((len(left), len(columns)), dtype=np.float32)
    b = np.zeros((len(right), len(columns)), dtype=np.float32)
    np.add.at(a, (left_pos, inverse[: len(left_cols)]), left_vals)
    np.add.at(b, (right_pos, inverse[len(left_cols):]), right_vals)
    return a @ b.T


def cosine_between(vectors: np.ndarray, items: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows ``items`` to rows ``others`` (the values of :func:`cosine_to_all`)."""
    left, right = vectors[items], vectors[others]
    left_norms, right_norms = np.linalg.norm(left, axis=1), np.linalg.norm(right, axis=1)
    denominator = np.where(left_norms > 0, left_norms, 1.0)[:, None] * right_norms[None, :]
    similarity: np.ndarray = np.divide(left @ right.T, denominator, out=np.zeros(denominator.shape, np.float32),
                                       where=denominator > 0)
    return similarity


def inverse_norms(vectors: np.ndarray) -> np.ndarray:
    """1 / the length of every row of ``vectors`` (0 for a zero row), float32. A model computes it
    once, so that explaining a few pairs (:func:`cosine_pairs`) reads only those pairs' rows."""
    norms = np.linalg.norm(vectors, axis=1)
    inverse: np.ndarray = np.divide(1.0, norms, out=np.zeros(len(norms), np.float32), where=norms > 0)
    return inverse.astype(np.float32)


def cosine_pairs(vectors: np.ndarray, inverse: np.ndarray, items: np.ndarray, others: np.ndarray) -> np.ndarray:
    """:func:`cosine_between` of rows ``items`` and ``others`` given every row's :func:`inverse_norms`
    (the same values up to float rounding): two gathers and one product, float32."""
    dots = vectors[items] @ vectors[others].T
    pairs: np.ndarray = (dots * inverse[items, None] * inverse[None, others]).astype(np.float32, copy=False)
    return pairs


def cosine_to_all(vectors: np.ndarray, item: int) -> np.ndarray:
    """Cosine similarity of row ``item`` to every row of ``vectors``."""
    norms = np.linalg.norm(vectors, axis=1)
    target = vectors[item]
    denominator = norms * (norms[item] or 1.0)
    similarity: np.ndarray = np.divide(vectors @ target, denominator, out=np.zeros(len(vectors), np.float32),
                                       where=denominator > 0)
    return similarity
