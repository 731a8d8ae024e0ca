"""The repeat policy: when an item a resident engaged with may be listed for them again.

By default an item never returns once a resident engaged with it, whatever they did. A
platform may let light engagement lapse instead: ``repeat_after_days`` (engine settings)
names actions and the days after which an item a resident *only* did those with may be
listed again, e.g. ``{"view": 30, "click": 30}`` (a page looked at and left returns a month
later); an action not named there keeps the item out for good, so a reserved, attended,
favourited or rated item (or one also viewed) never returns. The clock of each pair is its
latest returning action: ``max(ts + days[action])`` over the pair's events.

Training stores, per model, the pairs that may return and when (:data:`RETURNS_FILE`
``returns.npz`` in the artifact: users x items, epoch seconds; absent = nothing returns),
computed from the same events as the weights. Every list asks this module, so the API (both
paths), batch ``recsys recommend`` and the offline evaluation (at the cutoff, from the pairs
before it) keep the same items out:

- :func:`kept_out` (one user): their history minus the pairs whose time has come, unless the
  resident engaged with the item again since the model was trained (a live interaction);
- :func:`kept_out_rows` (many users, batch and evaluation);
- :func:`still_out` (the precomputed-candidate path: the candidate lists leave out only what
  never returns, :func:`kept_out_rows` at infinity, and a request drops what has not returned yet).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import scipy.sparse as sp

RETURNS_FILE = "returns.npz"
NEVER = math.inf
"""``kept_out_rows(..., at=NEVER)``: what stays out at every moment (the pairs that never return)."""


def returned_items(returns: sp.csr_matrix | None, row: int, at: float) -> np.ndarray:
    """Items of user ``row`` whose return time is at or before ``at``."""
    if returns is None or row < 0:
        return np.zeros(0, dtype=np.int64)
    start, end = returns.indptr[row], returns.indptr[row + 1]
    items: np.ndarray = returns.indices[start:end][returns.data[start:end] <= at].astype(np.int64)
    return items


def still_out(returns: sp.csr_matrix | None, row: int, at: float) -> np.ndarray:
    """Items of user ``row`` that will return, but not yet at ``at``."""
    if returns is None or row < 0:
        return np.zeros(0, dtype=np.int64)
    start, end = returns.indptr[row], returns.indptr[row + 1]
    items: np.ndarray = returns.indices[start:end][returns.data[start:end] > at].astype(np.int64)
    return items


def kept_out(history_items: np.ndarray, returns: sp.csr_matrix | None, row: int, at: float,
             fresh: Collection[int] = ()) -> np.ndarray:
    """The items of ``history_items`` (a user's, live ones included) a list must leave out at ``at``:
    all but those returned by then, and those only if not engaged with again (``fresh``)."""
    back = returned_items(returns, row, at)
    if len(back) == 0:
        return history_items
    if fresh:
        back = back[~np.isin(back, np.fromiter(fresh, dtype=np.int64, count=len(fresh)))]
    out: np.ndarray = np.setdiff1d(history_items, back, assume_unique=False)
    return out


def kept_out_rows(history: sp.csr_matrix, returns: sp.csr_matrix | None, at: float) -> sp.csr_matrix:
    """Per row of ``history`` (users x items), the pairs a list must leave out at ``at`` (the pattern
    of the result counts, as :func:`recsys.ranking.top_k_batch`'s ``exclude`` reads it);
    ``returns`` holds the same rows."""
    if returns is None or returns.nnz == 0:
        return history
    back = returns.copy()
    back.data = (back.data <= at).astype(np.float32)
    back.eliminate_zeros()
    if back.nnz == 0:
        return history
    engaged = (history != 0).astype(np.float32)
    out = sp.csr_matrix(engaged - engaged.multiply(back))
    out.eliminate_zeros()
    return out
