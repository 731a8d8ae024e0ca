"""Offline ranking and catalogue metrics, vectorised over users.

Conventions shared by every function:

* ``recs`` is an integer array ``(n_users, k_max)`` of item indices, best first. ``-1`` marks
  an empty slot (the user got fewer than ``k_max`` items). An empty slot is never a hit but
  still occupies its position, so a list of 5 items scored at ``k=10`` scores exactly like the
  same 5 items padded with ``-1`` to 10 columns. Only the first ``k`` columns are read and
  validated; an item may appear at most once among them (a repeat would count one hit twice
  and push recall above 1), and every index must be ``-1`` or a valid item index.
* ``truth`` is a ``scipy.sparse`` matrix ``(n_users, n_items)``. A stored nonzero means
  "relevant" (binary relevance: the value itself is ignored, explicit zeros are not relevant).
  Row ``i`` of ``truth`` belongs to row ``i`` of ``recs``.
* ``k`` is the cut-off, an integer ``>= 1``. ``k`` larger than ``recs.shape[1]`` is allowed:
  the missing columns are empty slots.
* Accuracy metrics (precision, recall, nDCG, MAP, hit rate, MRR) are computed per user and
  averaged over *eligible* users: those with at least one relevant item. A user without truth
  says nothing about ranking quality, so it neither helps nor hurts. With no eligible user the
  mean is NaN (never a misleading 0).
* Catalogue metrics (coverage, novelty, diversity, slot share) look at every user's list,
  whether or not that user has truth.

Hits are found by one binary search of flattened ``(user, item)`` keys against the canonical
CSR structure of ``truth``, so the cost is ``O(n_users * k * log nnz)`` with no Python loop per
user; 50k users at ``k=20`` take a few tens of milliseconds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

EMPTY_SLOT = -1
"""The padding value of ``recs``: no item in this slot."""

_MAX_KEY = np.iinfo(np.int64).max


# --------------------------------------------------------------------------- validation


def _check_k(k: object, name: str = "k") -> int:
    """``k`` as a plain int, or a ValueError saying what is wrong with it."""
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise ValueError(f"{name} must be an integer >= 1, got {k!r} ({type(k).__name__})")
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return int(k)


def _top_k(recs: ArrayLike, k: int, n_items: int | None, items_source: str) -> NDArray[np.int64]:
    """The first ``k`` columns of ``recs`` as int64, after checking shape, range and repeats.

    ``n_items`` (when known) bounds the item indices; ``items_source`` names where that bound
    came from so the error message points at the right argument.
    """
    arr = np.asarray(recs)
    if arr.ndim != 2:
        raise ValueError(f"recs must be a 2-D array (n_users, k_max), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"recs must hold integer item indices, got dtype {arr.dtype}")
    top = arr[:, :k].astype(np.int64, copy=False)
    if top.size == 0:
        return top
    lowest = int(top.min())
    if lowest < EMPTY_SLOT:
        raise ValueError(f"recs holds {lowest}; item indices are >= 0 and {EMPTY_SLOT} marks an empty slot")
    highest = int(top.max())
    if n_items is not None and highest >= n_items:
        raise ValueError(f"recs holds item index {highest} but {items_source} has only {n_items} items")
    _reject_repeats(top)
    return top


def _reject_repeats(top: NDArray[np.int64]) -> None:
    """Raise if a row lists the same item twice (empty slots may repeat)."""
    ordered = np.sort(top, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != EMPTY_SLOT)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        item = int(ordered[row, 1:][repeated[row]][0])
        raise ValueError(
            f"recs row {row} lists item {item} more than once in its top {top.shape[1]}; "
            "each item may appear at most once per list"
        )


def _canonical_truth(truth: object, n_users: int) -> sp.csr_matrix:
    """A CSR copy of ``truth`` with sorted, unique indices and no explicit zeros."""
    if not sp.issparse(truth):
        raise ValueError(f"truth must be a scipy.sparse matrix, got {type(truth).__name__}")
    matrix: sp.spmatrix | sp.sparray = truth  # a sparse matrix: checked just above
    if matrix.ndim != 2:
        raise ValueError(f"truth must be 2-D (n_users, n_items), got shape {matrix.shape}")
    if matrix.shape[0] != n_users:
        raise ValueError(f"recs has {n_users} user rows but truth has {matrix.shape[0]}")
    csr = sp.csr_matrix(matrix, copy=True)
    # Summing duplicates also sorts indices, which the key search below relies on.
    csr.sum_duplicates()
    csr.eliminate_zeros()
    return csr


def _item_vector(values: ArrayLike, name: str, n_items: int | None = None) -> np.ndarray:
    """A 1-D per-item array, optionally of a required length."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array with one entry per item, got shape {arr.shape}")
    if n_items is not None and arr.shape[0] != n_items:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n_items} items")
    return arr


def _bool_mask(mask: ArrayLike, name: str, n_items: int | None = None) -> NDArray[np.bool_]:
    """A 1-D boolean per-item mask; integer arrays are refused so index lists are not mistaken."""
    arr = _item_vector(mask, name, n_items)
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array (one flag per item), got dtype {arr.dtype}")
    return arr


def _check_item_counts(item_counts: ArrayLike, n_users: object) -> tuple[NDArray[np.float64], int]:
    """Per-item user counts as floats and the population size they were counted over."""
    n_pop = _check_k(n_users, "n_users")
    counts = _item_vector(item_counts, "item_counts")
    if counts.dtype.kind not in "iuf":
        raise ValueError(f"item_counts must be numeric, got dtype {counts.dtype}")
    counts = counts.astype(np.float64)
    if counts.size and not np.isfinite(counts).all():
        raise ValueError("item_counts must be finite")
    if counts.size and counts.min() < 0:
        raise ValueError(f"item_counts must be >= 0, got {counts.min():g}")
    if counts.size and counts.max() > n_pop:
        raise ValueError(
            f"item_counts holds {counts.max():g} but n_users is {n_pop}; counts are the number of "
            "distinct users per item, so none can exceed n_users"
        )
    return counts, n_pop


def _check_categories(item_category: ArrayLike) -> NDArray[np.int64]:
    """Per-item category codes re-coded densely (0..n_codes-1) so pair keys stay small."""
    codes = _item_vector(item_category, "item_category")
    if codes.dtype.kind not in "iu":
        raise ValueError(f"item_category must hold integer category codes, got dtype {codes.dtype}")
    _, dense = np.unique(codes, return_inverse=True)
    return dense.reshape(-1).astype(np.int64, copy=False)


# --------------------------------------------------------------------------- hits


def _hits(top: NDArray[np.int64], truth: sp.csr_matrix, k: int) -> NDArray[np.bool_]:
    """Bool ``(n_users, k)``: slot j of user u holds an item relevant to u.

    Each stored entry of canonical CSR ``truth`` becomes the key ``row * n_items + col``; those
    keys are globally sorted (rows in order, columns sorted within a row), so every slot is
    looked up with one vectorised ``searchsorted``. Columns beyond ``top`` are empty slots.
    """
    n_users, n_items = truth.shape
    if n_users and n_items and (n_users - 1) > (_MAX_KEY - n_items) // n_items:
        raise ValueError(f"truth shape {truth.shape} is too large to key as int64 (user, item) pairs")
    hits = np.zeros((n_users, k), dtype=bool)
    width = top.shape[1]
    if width == 0 or truth.nnz == 0:
        return hits
    truth_rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(truth.indptr))
    truth_keys = truth_rows * n_items + truth.indices.astype(np.int64)
    filled = top != EMPTY_SLOT
    # An empty slot would otherwise key to the previous user's last item; send it to 0 and mask.
    slot_keys = np.where(filled, np.arange(n_users, dtype=np.int64)[:, None] * n_items + top, 0)
    pos = np.searchsorted(truth_keys, slot_keys)
    found = truth_keys[np.minimum(pos, truth_keys.size - 1)] == slot_keys
    hits[:, :width] = found & filled
    return hits


def _truth_counts(truth: sp.csr_matrix) -> NDArray[np.int64]:
    """Number of relevant items per user (row)."""
    counts: NDArray[np.int64] = np.diff(truth.indptr).astype(np.int64)  # truth is untyped (scipy)
    return counts


def hits_matrix(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> NDArray[np.bool_]:
    """Whether each of the first ``k`` slots holds a relevant item.

    ``hits[u, j] = 1[recs[u, j] != -1 and truth[u, recs[u, j]] != 0]`` for ``j < k``.

    Returns a bool array of shape ``(n_users, k)``; when ``k > recs.shape[1]`` the extra
    columns are empty slots and therefore False. Users without truth get an all-False row.
    """
    k = _check_k(k)
    _, _, hits, _ = _prepare(recs, truth, k)
    return hits


def _prepare(
    recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int
) -> tuple[NDArray[np.int64], sp.csr_matrix, NDArray[np.bool_], NDArray[np.int64]]:
    """Validated top-k slots, canonical truth, the hits matrix and per-user truth counts."""
    top = _top_k(recs, k, None, "truth")
    csr = _canonical_truth(truth, top.shape[0])
    if top.size and int(top.max()) >= csr.shape[1]:
        raise ValueError(f"recs holds item index {int(top.max())} but truth has only {csr.shape[1]} items")
    return top, csr, _hits(top, csr, k), _truth_counts(csr)


# --------------------------------------------------------------------------- per-user values


def _discounts(k: int) -> NDArray[np.float64]:
    """``1 / log2(j + 1)`` for ranks ``j = 1..k``."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _only_eligible(values: NDArray[np.float64], n_truth: NDArray[np.int64]) -> NDArray[np.float64]:
    """``values`` with NaN for users that have no relevant item."""
    return np.where(n_truth > 0, values, np.nan)


def _precision_values(hits: NDArray[np.bool_], n_truth: NDArray[np.int64]) -> NDArray[np.float64]:
    return _only_eligible(hits.sum(axis=1) / hits.shape[1], n_truth)


def _recall_values(hits: NDArray[np.bool_], n_truth: NDArray[np.int64]) -> NDArray[np.float64]:
    return _only_eligible(hits.sum(axis=1) / np.maximum(n_truth, 1), n_truth)


def _ndcg_values(hits: NDArray[np.bool_], n_truth: NDArray[np.int64]) -> NDArray[np.float64]:
    k = hits.shape[1]
    discounts = _discounts(k)
    dcg = hits @ discounts
    ideal_len = np.clip(n_truth, 1, k)
    idcg = np.cumsum(discounts)[ideal_len - 1]
    return _only_eligible(dcg / idcg, n_truth)


def _ap_values(hits: NDArray[np.bool_], n_truth: NDArray[np.int64]) -> NDArray[np.float64]:
    k = hits.shape[1]
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    summed = (precision_at_rank * hits).sum(axis=1)
    return _only_eligible(summed / np.clip(n_truth, 1, k), n_truth)


def _hit_values(hits: NDArray[np.bool_], n_truth: NDArray[np.int64]) -> NDArray[np.float64]:
    return _only_eligible(np.asarray(hits.any(axis=1)).astype(np.float64), n_truth)


def _rr_values(hits: NDArray[np.bool_], n_truth: NDArray[np.int64]) -> NDArray[np.float64]:
    first_rank = hits.argmax(axis=1) + 1  # argmax finds the first True
    reciprocal = np.where(hits.any(axis=1), 1.0 / first_rank, 0.0)
    return _only_eligible(reciprocal, n_truth)


def _mean_ignoring_nan(values: NDArray[np.float64]) -> float:
    """Mean of the non-NaN entries, NaN when there are none (without a RuntimeWarning)."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


# --------------------------------------------------------------------------- accuracy metrics


def precision_at_k(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> float:
    """Mean precision@k over users with at least one relevant item.

    ``P@k(u) = |{j <= k : rec_j relevant}| / k``. The denominator is always ``k``: empty slots
    (``-1`` or columns beyond ``recs.shape[1]``) count as misses, so short lists are not
    rewarded for recommending less. NaN when no user has a relevant item.
    """
    k = _check_k(k)
    _, _, hits, n_truth = _prepare(recs, truth, k)
    return _mean_ignoring_nan(_precision_values(hits, n_truth))


def recall_at_k(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> float:
    """Mean recall@k over users with at least one relevant item.

    ``R@k(u) = |{j <= k : rec_j relevant}| / |truth(u)|``: standard recall, *not* divided by
    ``min(|truth(u)|, k)``, so a user with more than ``k`` relevant items cannot reach 1.
    NaN when no user has a relevant item.
    """
    k = _check_k(k)
    _, _, hits, n_truth = _prepare(recs, truth, k)
    return _mean_ignoring_nan(_recall_values(hits, n_truth))


def per_user_ndcg(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> NDArray[np.float64]:
    """nDCG@k per user, NaN for users without a relevant item.

    Binary gains and a log2 discount:
    ``DCG@k(u) = sum_{j=1..k} rel_j / log2(j + 1)``,
    ``IDCG@k(u) = sum_{j=1..min(|truth(u)|, k)} 1 / log2(j + 1)``,
    ``nDCG@k(u) = DCG@k(u) / IDCG@k(u)`` (in [0, 1]).
    """
    k = _check_k(k)
    _, _, hits, n_truth = _prepare(recs, truth, k)
    return _ndcg_values(hits, n_truth)


def ndcg_at_k(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> float:
    """Mean nDCG@k over users with at least one relevant item (NaN if none).

    ``nDCG@k(u) = [sum_{j=1..k} rel_j / log2(j + 1)] / [sum_{j=1..min(|truth(u)|, k)} 1 / log2(j + 1)]``
    with binary gains; see :func:`per_user_ndcg`.
    """
    return _mean_ignoring_nan(per_user_ndcg(recs, truth, k))


def map_at_k(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> float:
    """Mean average precision@k over users with at least one relevant item (NaN if none).

    ``AP@k(u) = sum_{j=1..k} P@j(u) * rel_j / min(|truth(u)|, k)`` where ``P@j`` is the
    precision of the first ``j`` slots. Normalising by ``min(|truth|, k)`` makes a perfect
    top-k score 1 even when the user has more than ``k`` relevant items.
    """
    k = _check_k(k)
    _, _, hits, n_truth = _prepare(recs, truth, k)
    return _mean_ignoring_nan(_ap_values(hits, n_truth))


def hit_rate_at_k(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> float:
    """Share of users (with at least one relevant item) that get a relevant item in the top k.

    ``HR@k(u) = 1[exists j <= k : rec_j relevant]``, averaged; NaN when no user has truth.
    """
    k = _check_k(k)
    _, _, hits, n_truth = _prepare(recs, truth, k)
    return _mean_ignoring_nan(_hit_values(hits, n_truth))


def mrr_at_k(recs: ArrayLike, truth: sp.spmatrix | sp.sparray, k: int) -> float:
    """Mean reciprocal rank of the first relevant item within the top k.

    ``RR@k(u) = 1 / min{j <= k : rec_j relevant}``, or 0 when there is no hit; averaged over
    users with at least one relevant item (NaN if none).
    """
    k = _check_k(k)
    _, _, hits, n_truth = _prepare(recs, truth, k)
    return _mean_ignoring_nan(_rr_values(hits, n_truth))


def cold_item_recall(
    recs: ArrayLike, truth: sp.spmatrix | sp.sparray, cold_items_mask: ArrayLike, k: int
) -> float:
    """Recall@k restricted to relevant items that are cold (e.g. unseen in training).

    ``CR@k(u) = |{j <= k : rec_j relevant and cold}| / |{i in truth(u) : i cold}|``, averaged
    over users with at least one cold relevant item. NaN when no user has one, because "no
    cold item was ever relevant" is not the same as "the model never finds cold items".
    ``cold_items_mask`` is a bool array with one flag per item (``truth.shape[1]`` entries).
    """
    k = _check_k(k)
    top, csr, hits, _ = _prepare(recs, truth, k)
    cold = _bool_mask(cold_items_mask, "cold_items_mask", csr.shape[1])
    return _cold_recall(top, csr, hits, cold)


def _cold_recall(
    top: NDArray[np.int64], csr: sp.csr_matrix, hits: NDArray[np.bool_], cold: NDArray[np.bool_]
) -> float:
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    n_cold_truth = np.bincount(rows, weights=cold[csr.indices], minlength=csr.shape[0])
    eligible = n_cold_truth > 0
    if not eligible.any():
        return math.nan
    width = top.shape[1]
    slot_is_cold = cold[np.where(top == EMPTY_SLOT, 0, top)]  # empty slots are no hits anyway
    cold_hits = (hits[:, :width] & slot_is_cold).sum(axis=1)
    return float((cold_hits[eligible] / n_cold_truth[eligible]).mean())


# --------------------------------------------------------------------------- catalogue metrics


def catalog_coverage(recs: ArrayLike, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list.

    ``coverage@k = |{rec_{u,j} : all u, j <= k, rec_{u,j} != -1}| / n_items``. Every user's list
    counts, with or without truth.
    """
    k = _check_k(k)
    n_items = _check_k(n_items, "n_items")
    top = _top_k(recs, k, n_items, "the catalogue (n_items)")
    return _coverage(top, n_items)


def _coverage(top: NDArray[np.int64], n_items: int) -> float:
    shown = np.zeros(n_items, dtype=bool)
    shown[top[top != EMPTY_SLOT]] = True
    return float(shown.sum() / n_items)


def novelty(recs: ArrayLike, item_counts: ArrayLike, n_users: int, k: int) -> float:
    """Mean self-information of the recommended items, in bits.

    ``novelty@k = mean over filled slots (u, j <= k) of -log2(max(count_i, 1) / n_users)``
    where ``count_i`` is the number of distinct users who interacted with item ``i`` (e.g. in
    training) and ``n_users`` the population those counts were taken over. Items nobody
    touched are treated as touched by one user so the value stays finite. Always ``>= 0``;
    NaN when no slot is filled. ``item_counts`` has one entry per item, each in [0, n_users].
    """
    k = _check_k(k)
    counts, n_pop = _check_item_counts(item_counts, n_users)
    top = _top_k(recs, k, counts.shape[0], "item_counts")
    return _novelty(top, counts, n_pop)


def _novelty(top: NDArray[np.int64], counts: NDArray[np.float64], n_pop: int) -> float:
    items = top[top != EMPTY_SLOT]
    if items.size == 0:
        return math.nan
    information = -np.log2(np.maximum(counts[items], 1.0) / n_pop)
    return float(information.mean())


def intra_list_diversity(recs: ArrayLike, item_category: ArrayLike, k: int) -> float:
    """Mean share of item pairs in a top-k list whose categories differ.

    For a user with ``m >= 2`` filled slots among the first ``k``:
    ``ILD@k(u) = |{pairs {a, b} : cat_a != cat_b}| / (m (m - 1) / 2)
    = 1 - sum_c n_c (n_c - 1) / 2 / (m (m - 1) / 2)`` with ``n_c`` the items of category ``c``.
    Averaged over users with at least two filled slots; NaN when there are none.
    ``item_category`` holds one integer code per item (an "unknown" code is just another
    category).
    """
    k = _check_k(k)
    codes = _check_categories(item_category)
    top = _top_k(recs, k, codes.shape[0], "item_category")
    return _diversity(top, codes)


def _diversity(top: NDArray[np.int64], codes: NDArray[np.int64]) -> float:
    filled = top != EMPTY_SLOT
    n_filled = filled.sum(axis=1)
    eligible = n_filled >= 2
    if not eligible.any():
        return math.nan
    n_codes = int(codes.max()) + 1
    rows, cols = np.nonzero(filled)
    # Count items per (user, category) via unique keys, then same-category pairs per user.
    keys = rows.astype(np.int64) * n_codes + codes[top[rows, cols]]
    unique_keys, per_group = np.unique(keys, return_counts=True)
    same_pairs = np.bincount(
        unique_keys // n_codes, weights=per_group * (per_group - 1) / 2.0, minlength=top.shape[0]
    )
    all_pairs = n_filled * (n_filled - 1) / 2.0
    share_different = 1.0 - same_pairs[eligible] / all_pairs[eligible]
    return float(share_different.mean())


def slot_share(recs: ArrayLike, item_mask: ArrayLike, k: int) -> float:
    """Share of filled top-k slots that go to items flagged in ``item_mask``.

    ``share@k = |{(u, j <= k) : rec_{u,j} != -1 and mask[rec_{u,j}]}| / |{(u, j <= k) : rec_{u,j} != -1}|``.
    NaN when no slot is filled. ``item_mask`` is a bool array with one flag per item; compare
    with :func:`catalog_share` to see whether a group (e.g. rural or free items) gets more or
    less exposure than its share of the catalogue.
    """
    k = _check_k(k)
    mask = _bool_mask(item_mask, "item_mask")
    top = _top_k(recs, k, mask.shape[0], "item_mask")
    items = top[top != EMPTY_SLOT]
    if items.size == 0:
        return math.nan
    return float(mask[items].mean())


def catalog_share(item_mask: ArrayLike) -> float:
    """Share of the catalogue flagged in ``item_mask``: ``sum(mask) / len(mask)`` (NaN if empty)."""
    mask = _bool_mask(item_mask, "item_mask")
    return float(mask.mean()) if mask.size else math.nan


# --------------------------------------------------------------------------- segments


def _segment_index(per_user: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values as floats, sorted distinct label names (as str) and each user's label index."""
    values = np.asarray(per_user, dtype=np.float64)
    names = np.asarray(labels)
    if values.ndim != 1 or names.ndim != 1:
        raise ValueError(f"per_user and labels must be 1-D, got shapes {values.shape} and {names.shape}")
    if values.shape[0] != names.shape[0]:
        raise ValueError(f"per_user has {values.shape[0]} values but labels has {names.shape[0]}")
    distinct, inverse = np.unique(names.astype(str), return_inverse=True)
    return values, distinct, inverse.reshape(-1)


def segment_counts(per_user: ArrayLike, labels: ArrayLike) -> dict[str, int]:
    """Per label, how many users have a non-NaN value (the ``n`` behind :func:`segment_means`).

    ``count(s) = |{u : label_u = s, value_u not NaN}|``. Every label present appears as a key
    (``str(label)``), with 0 when all its values are NaN.
    """
    values, distinct, inverse = _segment_index(per_user, labels)
    valid = ~np.isnan(values)
    counts = np.bincount(inverse[valid], minlength=distinct.shape[0])
    return {str(name): int(n) for name, n in zip(distinct, counts, strict=True)}


def segment_means(per_user: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Per label, the mean of the per-user values ignoring NaN (users without truth).

    ``mean(s) = sum_{u : label_u = s, value_u not NaN} value_u / count(s)``, NaN when
    ``count(s) = 0``. Keys are ``str(label)`` in sorted order; use :func:`segment_counts` for
    the number of users behind each mean.
    """
    values, distinct, inverse = _segment_index(per_user, labels)
    valid = ~np.isnan(values)
    sums = np.bincount(inverse[valid], weights=values[valid], minlength=distinct.shape[0])
    counts = np.bincount(inverse[valid], minlength=distinct.shape[0])
    means = np.full(distinct.shape[0], math.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return {str(name): float(m) for name, m in zip(distinct, means, strict=True)}


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is 0 or NaN (or ``a`` is NaN), never a ZeroDivisionError."""
    a, b = float(a), float(b)
    if b == 0.0 or math.isnan(b):
        return math.nan
    return a / b


# --------------------------------------------------------------------------- one call for a report


def evaluate_ranking(
    recs: ArrayLike,
    truth: sp.spmatrix | sp.sparray,
    k_values: Iterable[int] = (10, 20),
    *,
    item_counts: ArrayLike | None = None,
    n_users_total: int | None = None,
    item_category: ArrayLike | None = None,
    cold_items_mask: ArrayLike | None = None,
) -> dict[str, float]:
    """Every metric that can be computed from what was given, for each cut-off in ``k_values``.

    Always: ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``hit_rate@k``, ``mrr@k``
    and ``coverage@k`` (over ``truth.shape[1]`` items). With ``item_counts`` and
    ``n_users_total`` (both or neither): ``novelty@k``. With ``item_category``:
    ``diversity@k``. With ``cold_items_mask``: ``cold_recall@k``. Formulas and NaN rules are
    those of the single-metric functions; the hits matrix is computed once for the largest k
    and sliced for the others.
    """
    ks = [_check_k(k, "every k in k_values") for k in k_values]
    if not ks:
        raise ValueError("k_values must hold at least one cut-off")
    if (item_counts is None) != (n_users_total is None):
        raise ValueError("novelty needs both item_counts and n_users_total; pass both or neither")

    k_top = max(ks)
    top, csr, hits, n_truth = _prepare(recs, truth, k_top)
    n_items = csr.shape[1]
    popularity = None if item_counts is None else _check_item_counts(item_counts, n_users_total)
    if popularity is not None and popularity[0].shape[0] != n_items:
        raise ValueError(f"item_counts has {popularity[0].shape[0]} entries but truth has {n_items} items")
    codes = None
    if item_category is not None:
        codes = _check_categories(_item_vector(item_category, "item_category", n_items))
    cold = None if cold_items_mask is None else _bool_mask(cold_items_mask, "cold_items_mask", n_items)
    logger.debug("evaluating %d users (%d with truth) at k=%s", top.shape[0], int((n_truth > 0).sum()), ks)

    results: dict[str, float] = {}
    for k in ks:
        hits_k, top_k = hits[:, :k], top[:, :k]
        results[f"precision@{k}"] = _mean_ignoring_nan(_precision_values(hits_k, n_truth))
        results[f"recall@{k}"] = _mean_ignoring_nan(_recall_values(hits_k, n_truth))
        results[f"ndcg@{k}"] = _mean_ignoring_nan(_ndcg_values(hits_k, n_truth))
        results[f"map@{k}"] = _mean_ignoring_nan(_ap_values(hits_k, n_truth))
        results[f"hit_rate@{k}"] = _mean_ignoring_nan(_hit_values(hits_k, n_truth))
        results[f"mrr@{k}"] = _mean_ignoring_nan(_rr_values(hits_k, n_truth))
        results[f"coverage@{k}"] = _coverage(top_k, n_items) if n_items else math.nan
        if popularity is not None:
            results[f"novelty@{k}"] = _novelty(top_k, *popularity)
        if codes is not None:
            results[f"diversity@{k}"] = _diversity(top_k, codes)
        if cold is not None:
            results[f"cold_recall@{k}"] = _cold_recall(top_k, csr, hits_k, cold)
    return results
