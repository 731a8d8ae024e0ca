"""Top-k selection under masks, and MMR re-ranking for category diversity.

MMR (Carbonell & Goldstein 1998), with the redundancy of an item growing with the number
``c`` of items of its category already chosen (a cap that tightens with every repeat, not
only the first, though by less each time), picks one slot at a time:

    argmax_i  (1 − λ) · rel(i) − λ · sqrt(c(i))

with rel the min-max normalised score over the candidates and λ the ``diversity`` knob in
[0, 1]: 0 keeps the score order; at 0.1 (the API's default) a category's second item must
score 0.11 of the score range above another category's best, its third 0.16 more; from 0.5
up an item of a category not yet listed always comes first, so the list takes categories in
turn, best first, and spreads over as many categories as its candidates hold.

A list can only spread over the categories among its candidates, and the best ``5 x n``
items of a user with a strong taste are often all of one category. So from
:data:`SPREAD_AT` up, the candidates are widened with the best items of every category the
request allows (:func:`with_category_bests`), enough of each for the list to take them in turn.
What each setting costs (NDCG@10) and buys (categories per list) on the demo cloud:
``python -m experiments.diversity_cost``.
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


DEFAULT_DIVERSITY = 0.1
"""The lists' default: about the cost and spread the default had before repeats were counted
(demo cloud: -5% NDCG@10, 4.3 categories in 10 items; see the module docstring)."""
SPREAD_AT = 0.5
"""From this ``diversity`` up, candidates include every allowed category's best items."""


def with_category_bests(candidates: np.ndarray, scores: np.ndarray, allowed: np.ndarray,
                        categories: np.ndarray, n: int) -> np.ndarray:
    """``candidates`` (:func:`top_k` order) plus the best ``ceil(n / k)`` allowed items of each of
    the ``k`` categories holding allowed items with a finite score, in :func:`top_k` order (score,
    then lower index): what a list taking ``n`` items from the categories in turn may need."""
    eligible = np.flatnonzero(allowed & np.isfinite(scores) & (categories >= 0))
    if len(eligible) == 0:
        return candidates
    cats = categories[eligible]
    values = scores[eligible]
    order = np.lexsort((eligible, -values, cats))  # by category, best first within each
    grouped = cats[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    per = math.ceil(n / len(starts))
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    pool = np.union1d(candidates, eligible[order[rank < per]])
    return pool[np.lexsort((pool, -np.asarray(scores, dtype=np.float64)[pool]))]


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
    base = [(1.0 - diversity) * r for r in relevance]
    cats = np.asarray(categories)[candidates].tolist()
    return candidates[_mmr_positions(base, diversity, cats, min(n, len(candidates)))]


def _mmr_positions(base: list[float], diversity: float, cats: list[int], n: int) -> list[int]:
    """MMR positions: each step takes the first maximal gain, then lowers the gains of the
    chosen category's other members by ``diversity`` (one more of their category chosen)."""
    gain = list(base)
    members: dict[int, list[int]] = {}
    for position, category in enumerate(cats):
        if category >= 0:  # an unknown category (-1) is never redundant
            members.setdefault(category, []).append(position)
    taken: dict[int, int] = {}
    chosen: list[int] = []
    for _ in range(n):
        pick = gain.index(max(gain))  # first max = best-scored among equals, as np.argmax
        chosen.append(pick)
        gain[pick] = -math.inf
        category = cats[pick]
        if category >= 0:
            taken[category] = count = taken.get(category, 0) + 1
            penalty = diversity * math.sqrt(count)  # recomputed, not accumulated: the same floats as the formula
            for position in members[category]:
                if gain[position] != -math.inf:
                    gain[position] = base[position] - penalty
    return chosen
