"""Top-k selection under masks, and MMR re-ranking for category diversity.

MMR (Carbonell & Goldstein 1998) picks, one slot at a time,

    argmax_i  (1 − λ) · rel(i) − λ · max_{j ∈ chosen} same_category(i, j)

with rel the min-max normalised score over the candidates and λ the ``diversity`` knob in
[0, 1]: 0 keeps the score order, 1 never repeats a category while another is left.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best finite scores among ``allowed`` items, best first.

    Ties are broken by the lower index so results are deterministic.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores, dtype=np.float64)
    eligible = np.isfinite(scores) if allowed is None else (allowed & np.isfinite(scores))
    candidates = np.flatnonzero(eligible)
    if len(candidates) == 0:
        return candidates
    if len(candidates) > k:
        part = np.argpartition(-scores[candidates], k - 1)[:k]
        # include every candidate tied with the k-th so tie-breaking by index is exact
        threshold = scores[candidates[part]].min()
        candidates = candidates[scores[candidates] >= threshold]
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order][:k]


def top_k_batch(scores: np.ndarray, k: int, allowed: np.ndarray | None = None,
                exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Row-wise :func:`top_k` as an int array (rows, k) padded with -1.

    ``allowed`` is one mask for all rows; ``exclude`` holds per-row items to drop (history).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.array(scores, dtype=np.float32, copy=True)
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    if exclude is not None:
        rows, cols = exclude.nonzero()
        scores[rows, cols] = -np.inf
    return top_k_rows(scores, k)


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k` of every row of ``scores`` (rows, n) over its finite entries, as int64
    (rows, k) padded with -1: the same items in the same order (score, then lower index).

    A few passes over the whole array instead of one Python-level call per row: a partition
    finds each row's ``k``-th best value, a comparison with it picks the row's items, and only
    those are sorted. Where more items than ``k`` share a row's ``k``-th value, the row takes
    the lowest indices among them, as :func:`top_k` does.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_rows, n = scores.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    width = min(k, n)
    if n_rows == 0 or width == 0:
        return out
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    below_inf = scores < np.inf  # False for nan and +inf, which top_k never picks
    keys = scores if below_inf.all() else np.where(below_inf, scores, -np.inf)
    if width < n:
        threshold = np.partition(keys, n - width, axis=1)[:, n - width]  # each row's width-th best
        take = keys >= threshold[:, None]
        short = np.flatnonzero(threshold == -np.inf)  # fewer than width finite scores: take those
        take[short] = keys[short] > -np.inf
        counts = take.sum(axis=1)
        tied = np.flatnonzero(counts > width)
        if len(tied):
            take[tied] = _through_tie(keys[tied], threshold[tied], width)
            counts[tied] = width
    else:
        take = keys > -np.inf
        counts = take.sum(axis=1)
    rows, columns = np.divmod(np.flatnonzero(take), n)  # by row, then by index (2-d nonzero is 15x slower)
    slots = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    chosen = np.full((n_rows, width), -1, dtype=np.int64)
    values = np.full((n_rows, width), -np.inf, dtype=keys.dtype)
    chosen[rows, slots] = columns
    values[rows, slots] = keys[rows, columns]
    # each row's items are in index order, so a stable sort by score keeps ties by lower index;
    # padding (-inf) sorts last
    order = np.argsort(-values, axis=1, kind="stable")
    out[:, :width] = np.take_along_axis(chosen, order, axis=1)
    return out


def _through_tie(keys: np.ndarray, last: np.ndarray, width: int) -> np.ndarray:
    """Which items are each row's best ``width``, where the row's ``width``-th best value ``last``
    (finite) is shared beyond the cut: every item above it, then its lowest-index holders."""
    above = keys > last[:, None]
    level = keys == last[:, None]
    room = width - above.sum(axis=1)
    taken: np.ndarray = above | (level & (np.cumsum(level, axis=1) <= room[:, None]))
    return taken


def mmr(candidates: np.ndarray, scores: np.ndarray, categories: np.ndarray, n: int,
        diversity: float) -> np.ndarray:
    """Re-rank ``candidates`` (best first) to ``n`` items trading score for category variety.

    The candidates' scores must be finite.
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    candidates = np.asarray(candidates)
    if diversity == 0.0 or len(candidates) <= 1:
        return candidates[:n]
    values = np.asarray(scores, dtype=np.float64)[candidates]
    if not np.isfinite(values).all():  # max() would not pick a nan the way np.argmax does
        raise ValueError("MMR needs finite candidate scores (top_k returns only those)")
    # plain floats from here: for the few dozen candidates of a request numpy's per-call cost
    # dominates, and float arithmetic is the same IEEE double arithmetic, element by element
    relevance = values.tolist()
    low, span = min(relevance), max(relevance) - min(relevance)
    relevance = [(r - low) / span for r in relevance] if span > 0 else [1.0] * len(relevance)
    # a candidate's gain takes one of two values: before and after its category is chosen
    # (redundancy 0 or 1); both are computed once
    base = [(1.0 - diversity) * r for r in relevance]
    redundant = [b - diversity for b in base]
    cats = np.asarray(categories)[candidates].tolist()
    return candidates[_mmr_positions(base, redundant, cats, min(n, len(candidates)))]


def _mmr_positions(base: list[float], redundant: list[float], cats: list[int], n: int) -> list[int]:
    """MMR positions: each step takes the first maximal gain, then lowers the gains of the
    newly chosen category's members (the same numbers as recomputing every gain every step)."""
    gain = list(base)
    members: dict[int, list[int]] = {}
    for position, category in enumerate(cats):
        if category >= 0:  # an unknown category (-1) is never redundant
            members.setdefault(category, []).append(position)
    chosen: list[int] = []
    for _ in range(n):
        pick = gain.index(max(gain))  # first max = best-scored among equals, as np.argmax
        chosen.append(pick)
        for position in members.pop(cats[pick], ()):  # the only chosen member so far is ``pick``
            gain[position] = redundant[position]
        gain[pick] = -math.inf
    return chosen
