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

    A few passes over the whole array instead of one Python-level call per row: one
    partition, then a sort of the ``k`` chosen per row. Where the partition had to choose
    among items tied with a row's ``k``-th score, those rows are chosen again by mask (every
    item above the tie, then the lowest indices of the tied ones), as :func:`top_k` does.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_rows, n = scores.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    width = min(k, n)
    if n_rows == 0 or width == 0:
        return out
    keys = np.where(np.isfinite(scores), scores, -np.inf)
    if width < n:
        chosen = np.argpartition(-keys, width - 1, axis=1)[:, :width]
    else:
        chosen = np.broadcast_to(np.arange(n), (n_rows, n)).copy()
    values = np.take_along_axis(keys, chosen, axis=1)
    order = np.lexsort((chosen, -values), axis=1)
    chosen, values = np.take_along_axis(chosen, order, axis=1), np.take_along_axis(values, order, axis=1)
    out[:, :width] = np.where(np.isfinite(values), chosen, -1)
    if width < n:
        last = values[:, -1]
        tied = (keys == last[:, None]).sum(axis=1) > (values == last[:, None]).sum(axis=1)
        redo = np.flatnonzero(tied & np.isfinite(last))
        if len(redo):
            out[redo, :width] = _top_through_tie(keys[redo], last[redo], width)
    return out


def _top_through_tie(keys: np.ndarray, last: np.ndarray, width: int) -> np.ndarray:
    """The best ``width`` of each row, in order, where each row's ``width``-th best value ``last``
    (finite) is tied beyond the cut: all items above it, then its lowest-index holders."""
    above = keys > last[:, None]
    level = keys == last[:, None]
    room = width - above.sum(axis=1)
    take = above | (level & (np.cumsum(level, axis=1) <= room[:, None]))
    chosen = np.nonzero(take)[1].reshape(len(keys), width)  # exactly ``width`` per row, by index
    values = np.take_along_axis(keys, chosen, axis=1)
    return np.take_along_axis(chosen, np.lexsort((chosen, -values), axis=1), axis=1)


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
