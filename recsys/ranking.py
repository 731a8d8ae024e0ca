"""Top-k selection under masks, and MMR re-ranking for category diversity.

MMR (Carbonell & Goldstein 1998) picks, one slot at a time,

    argmax_i  (1 − λ) · rel(i) − λ · max_{j ∈ chosen} same_category(i, j)

with rel the min-max normalised score over the candidates and λ the ``diversity`` knob in
[0, 1]: 0 keeps the score order, 1 never repeats a category while another is left.
"""

from __future__ import annotations

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
    scores = np.array(scores, dtype=np.float32, copy=True)
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    if exclude is not None:
        rows, cols = exclude.nonzero()
        scores[rows, cols] = -np.inf
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for row in range(scores.shape[0]):
        best = top_k(scores[row], k)
        out[row, : len(best)] = best
    return out


def mmr(candidates: np.ndarray, scores: np.ndarray, categories: np.ndarray, n: int,
        diversity: float) -> np.ndarray:
    """Re-rank ``candidates`` (best first) to ``n`` items trading score for category variety."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    candidates = np.asarray(candidates)
    if diversity == 0.0 or len(candidates) <= 1:
        return candidates[:n]
    relevance = np.asarray(scores, dtype=np.float64)[candidates]
    span = relevance.max() - relevance.min()
    relevance = (relevance - relevance.min()) / span if span > 0 else np.ones_like(relevance)
    cats = np.asarray(categories)[candidates]
    chosen: list[int] = []
    redundancy = np.zeros(len(candidates))  # 1 where the candidate's category is already chosen
    remaining = np.ones(len(candidates), dtype=bool)
    while len(chosen) < min(n, len(candidates)):
        gain = (1.0 - diversity) * relevance - diversity * redundancy
        gain[~remaining] = -np.inf
        pick = int(np.argmax(gain))  # first max = best-scored among equals
        chosen.append(pick)
        remaining[pick] = False
        if cats[pick] >= 0:  # an unknown category (-1) is never redundant
            redundancy[cats == cats[pick]] = 1.0
    return candidates[chosen]
