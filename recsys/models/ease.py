"""EASE: the closed-form linear item-item autoencoder (Steck 2019).

B = I − P · diagMat(1 ⊘ diag(P)),  P = (XᵀX + λI)⁻¹, so diag(B) = 0 and score = X · B.

EASE often ranks best (see the README's offline results), but its model is a dense items x
items matrix, so its cost is set by how many items it covers, not by the data:

- It covers at most ``max_items`` items (default 20,000), the most active in training (the
  most users), and never an item nobody touched. Every other item is unscored (``-inf``,
  like a cold item): a plain EASE list never holds it, and as the ``cf_model`` of a hybrid
  its content and popularity parts score it. A long tail of rarely used items costs the
  most memory and adds the least.
- Memory, with m the covered items: the weights are m² x 4 bytes (float32) for as long as
  the model is loaded (1.6 GB at m = 20,000; 34 MB at 2,900). The fit builds the Gram
  matrix in float32, factorises and inverts it in place and turns it into the weights in
  place, so its peak is the same m² x 4 bytes plus one block of the sparse Gram product.
  float32 is safe when LAPACK's condition estimate of XᵀX + λI times float32's epsilon
  bounds the error below :data:`FLOAT32_MAX_ERROR`: on goodbooks-10k (10,000 books) at
  λ = 200 the float32 weights are within 2.4e-6 of the float64 ones (relative to the
  largest) and every user's top 20 is the same. Where the bound is not met (a small λ
  on a popular catalog: cond 1.8e5 on goodbooks at λ = 1), the fit starts again in float64,
  peaking at m² x 12 bytes (4.8 GB at 20,000).
- Time: a Cholesky factorisation and inverse of the Gram matrix (LAPACK potrf + potri,
  about m³ flops, no second m² buffer: 2.1 CPU-seconds at m = 4,000 in float64 against 5.2
  for numpy's general inverse, and half to two thirds of that in float32); scoring a user
  costs their history length x m; explaining a pair
  (:meth:`EASEModel.item_similarity_matrix`) costs m, with the norms computed once per model.
"""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg import lapack

from recsys.models.base import ModelConfig, Recommender, TrainingData
from recsys.threads import single_threaded_blas

log = logging.getLogger(__name__)

MAX_EASE_ITEMS = 20_000
"""Default ``max_items``: 1.6 GB of weights (and at the peak of a float32 fit)."""
FLOAT32_MAX_ERROR = 1e-3
"""The float32 inverse is used when condition estimate x float32 epsilon is at most this."""
BLOCK_ENTRIES = 1 << 23
"""Dense entries (64 MB in float64) per block when the Gram matrix is built and turned into weights."""


class EASEConfig(ModelConfig):
    l2: float = Field(200.0, gt=0, description="λ, the ridge on the Gram matrix")
    binary: bool = Field(True, description="fit on 0/1 interactions instead of confidences")
    max_items: int = Field(MAX_EASE_ITEMS, ge=1, description="items covered, the most active; the rest are unscored")


class EASEModel(Recommender):
    """EASE over the ``max_items`` most active items (see the module docstring)."""

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def fit(self, data: TrainingData) -> Self:
        """Fit on ``data`` (closed form: ``data.seed`` changes nothing, there is no randomness)."""
        counts = np.diff(data.matrix.tocsc().indptr)
        covered = most_active_items(counts, self.config.max_items)
        if len(covered) < int((counts > 0).sum()):
            log.info("EASE covers the %d most active of %d items; the others are unscored",
                     len(covered), int((counts > 0).sum()))
        x = self._inputs(data.matrix)[:, covered]
        with single_threaded_blas():  # reproducible runs (and no oversubscription next to other jobs)
            weights, precision_diag = ease_solution(x, self.config.l2)
        self._set_state(weights, covered, len(counts), precision_diag)
        self._fitted = True
        log.debug("EASE fitted: %d of %d items covered", len(covered), len(counts))
        return self

    def _inputs(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """The matrix the model reads: float32, 0/1 when ``binary``."""
        x = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        if self.config.binary:
            x.data[:] = 1.0
        return x

    def _set_state(self, weights: np.ndarray, items: np.ndarray, n_items: int,
                   precision_diag: np.ndarray | None) -> None:
        self.weights = weights
        self.items = np.asarray(items, dtype=np.int64)
        self.positions = np.full(n_items, -1, dtype=np.int64)
        self.positions[self.items] = np.arange(len(self.items))
        self.known_items = self.positions >= 0
        self.precision_diag = precision_diag
        self._norms: np.ndarray | None = None

    # ---- scoring ---------------------------------------------------------------------
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        self.check_rows(users, history)
        x = self._covered_columns(self._inputs(history))
        scores = np.full((history.shape[0], len(self.positions)), -np.inf, dtype=np.float32)
        scores[:, self.items] = np.asarray(x @ self.weights, dtype=np.float32)
        return scores

    def _covered_columns(self, x: sp.csr_matrix) -> sp.csr_matrix:
        """``x`` restricted to the covered items, in the weights' order (cost: its entries)."""
        if len(self.items) == len(self.positions):
            return x
        position = self.positions[x.indices]
        keep = position >= 0
        owner = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(owner[keep], minlength=x.shape[0]))])
        return sp.csr_matrix((x.data[keep], position[keep], indptr), shape=(x.shape[0], len(self.items)))

    # ---- explaining ------------------------------------------------------------------
    def item_similarity(self, item: int) -> np.ndarray | None:
        """Cosine of ``item``'s weight column to every item's (0 for uncovered items)."""
        if not self.known_items[item]:
            return None
        position = int(self.positions[item])
        vector = self._item_vectors(np.array([position]))[0]
        if self.precision_diag is not None:  # rows scaled by d: one product with W, no transpose
            dots = self.weights @ (vector * self.precision_diag)
        else:
            dots = self.weights.T @ vector
        norms = self._column_norms()
        denominator = norms * (norms[position] or 1.0)
        covered = np.divide(dots, denominator, out=np.zeros(len(dots), np.float32), where=denominator > 0)
        similarity = np.zeros(len(self.positions), dtype=np.float32)
        similarity[self.items] = covered
        return similarity

    def item_similarity_matrix(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """:meth:`item_similarity` for these pairs only: gathers len(items) + len(others)
        weight columns and reuses the cached norms, never the whole matrix."""
        items, others = np.asarray(items, dtype=np.int64), np.asarray(others, dtype=np.int64)
        out = np.zeros((len(items), len(others)), dtype=np.float32)
        left, right = self.positions[items], self.positions[others]
        rows, columns = np.flatnonzero(left >= 0), np.flatnonzero(right >= 0)
        if len(rows) and len(columns):
            norms = self._column_norms()
            dots = self._item_vectors(left[rows]) @ self._item_vectors(right[columns]).T
            left_norms = norms[left[rows]]
            denominator = np.where(left_norms > 0, left_norms, 1.0)[:, None] * norms[right[columns]][None, :]
            out[np.ix_(rows, columns)] = np.divide(dots, denominator, out=np.zeros(dots.shape, np.float32),
                                                   where=denominator > 0)
        out[left < 0] = np.nan
        return out

    def _item_vectors(self, positions: np.ndarray) -> np.ndarray:
        """The weight columns of the covered ``positions``, up to a positive factor per column.

        Column j of W is −P[:, j] / P[j, j] off the diagonal, and P is symmetric, so column j is
        row j of W times diag(P) (elementwise) over P[j, j]: contiguous rows instead of strided
        columns. Cosines ignore the factor. Models saved without diag(P) gather the columns.
        """
        if self.precision_diag is None:
            return np.ascontiguousarray(self.weights[:, positions].T)
        vectors: np.ndarray = self.weights[positions] * self.precision_diag[None, :]
        return vectors

    def _column_norms(self) -> np.ndarray:
        """The norm of every :meth:`_item_vectors` vector, computed once per model."""
        if self._norms is None:
            block = max(1, BLOCK_ENTRIES // max(len(self.items), 1))
            self._norms = np.concatenate(
                [np.linalg.norm(self._item_vectors(np.arange(start, min(start + block, len(self.items)))), axis=1)
                 for start in range(0, len(self.items), block)] or [np.zeros(0)]).astype(np.float32)
        return self._norms

    # ---- persistence -----------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"weights": self.weights, "known_items": self.known_items, "items": self.items}
        if self.precision_diag is not None:
            arrays["precision_diag"] = self.precision_diag
        return arrays

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        known = arrays["known_items"].astype(bool)
        weights = arrays["weights"]
        if "items" in arrays:
            items = arrays["items"].astype(np.int64)
        else:  # saved before max_items: a dense model over the whole catalog, unknown items unscored
            items = np.flatnonzero(known)
            weights = np.ascontiguousarray(weights[np.ix_(items, items)])
        self._set_state(weights, items, len(known), arrays.get("precision_diag"))


def most_active_items(counts: np.ndarray, limit: int) -> np.ndarray:
    """The items with a count, or the ``limit`` with the largest (ties by index), in index order."""
    items = np.flatnonzero(counts > 0)
    if len(items) > limit:
        items = np.sort(items[np.argsort(-counts[items], kind="stable")[:limit]])
    return items


def ease_solution(x: sp.csr_matrix, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """The EASE weights of ``x`` (float32) and diag(P) (float32): from a float32 inverse when its
    error bound allows (:data:`FLOAT32_MAX_ERROR`), else from a float64 one."""
    gram = gram_matrix(x, np.float32)
    gram[np.diag_indices_from(gram)] += l2
    try:
        error_bound = invert_spd_in_place(gram, error_bound=True) * float(np.finfo(np.float32).eps)
    except np.linalg.LinAlgError:  # not positive definite in float32 rounding
        error_bound = np.inf
    if error_bound <= FLOAT32_MAX_ERROR:
        diag = gram.diagonal().copy()
        return ease_weights_in_place(gram, diag), diag
    log.info("EASE: float32 inverse error bound %.2g above %.0e; inverting in float64", error_bound,
             FLOAT32_MAX_ERROR)
    del gram
    gram = gram_matrix(x, np.float64)
    gram[np.diag_indices_from(gram)] += l2
    invert_spd_in_place(gram)
    diag = gram.diagonal().copy()
    return ease_weights(gram, diag), diag.astype(np.float32)


def gram_matrix(x: sp.csr_matrix, dtype: type[np.floating] = np.float64) -> np.ndarray:
    """XᵀX as a dense ``dtype`` array, built a block of rows at a time (never the whole sparse
    product; each block summed in float64: counts stay exact in float32 below 2^24 users)."""
    n = x.shape[1]
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    xt = sp.csr_matrix(x.T, dtype=np.float64)
    right = sp.csr_matrix(x, dtype=np.float64)
    gram = np.empty((n, n), dtype=dtype)
    block = max(1, BLOCK_ENTRIES // max(n, 1))
    for start in range(0, n, block):
        gram[start:start + block] = (xt[start:start + block] @ right).toarray()
    return gram


def invert_spd_in_place(matrix: np.ndarray, *, error_bound: bool = False) -> float:
    """Overwrite the symmetric positive definite float32/float64 ``matrix`` with its inverse
    (Cholesky: LAPACK potrf + potri, then the other triangle mirrored).

    With ``error_bound``, first estimate the condition number (LAPACK pocon on the factor) and
    return it, leaving ``matrix`` unusable if it exceeds ``FLOAT32_MAX_ERROR / eps`` (the
    caller starts again in float64); else return 0.
    """
    if len(matrix) == 0:
        return 0.0
    potrf, potri, pocon = lapack.get_lapack_funcs(("potrf", "potri", "pocon"), (matrix,))
    norm = float(np.abs(matrix).sum(axis=0).max()) if error_bound else 0.0  # the 1-norm, before factorising
    factor, info = potrf(matrix.T, lower=0, clean=0, overwrite_a=1)  # C order: .T is Fortran
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE Gram matrix is not positive definite (potrf info {info})")
    condition = 0.0
    if error_bound:
        reciprocal, info = pocon(factor, norm, uplo="U")
        condition = 1.0 / reciprocal if info == 0 and reciprocal > 0 else np.inf
        if condition * np.finfo(matrix.dtype).eps > FLOAT32_MAX_ERROR:
            return condition
    inverse, info = potri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE Gram matrix cannot be inverted (potri info {info})")
    if not np.shares_memory(inverse, matrix):  # LAPACK worked on a copy (unusual layouts)
        matrix[...] = inverse.T
    _mirror_lower_triangle(matrix)
    return condition


def _mirror_lower_triangle(matrix: np.ndarray) -> None:
    """Copy the lower triangle onto the upper one, a block of rows at a time."""
    n = len(matrix)
    block = max(1, min(n, BLOCK_ENTRIES // max(n, 1)))
    for start in range(0, n, block):
        end = min(start + block, n)
        square = matrix[start:end, start:end]
        upper = np.triu_indices(end - start, 1)
        square[upper] = square.T[upper]
        matrix[start:end, end:] = matrix[end:, start:end].T


def ease_weights_in_place(precision: np.ndarray, precision_diag: np.ndarray) -> np.ndarray:
    """:func:`ease_weights` written over ``precision`` itself (float32: no second m² buffer)."""
    n = len(precision)
    block = max(1, BLOCK_ENTRIES // max(n, 1))
    for start in range(0, n, block):
        rows = precision[start:start + block]
        np.divide(rows, precision_diag[None, :], out=rows)
        np.negative(rows, out=rows)
    precision[np.diag_indices(n)] = 0.0
    return precision


def ease_weights(precision: np.ndarray, precision_diag: np.ndarray) -> np.ndarray:
    """B = −P / diag(P) column-wise with a zero diagonal, as float32, a block of rows at a time."""
    n = len(precision)
    weights = np.empty((n, n), dtype=np.float32)
    block = max(1, BLOCK_ENTRIES // max(n, 1))
    for start in range(0, n, block):
        weights[start:start + block] = -precision[start:start + block] / precision_diag[None, :]
    weights[np.diag_indices(n)] = 0.0
    return weights
