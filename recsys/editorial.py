"""Editorial slots (人工干预): list positions the operators' curated pool fills.

Operators flag items ``editorial`` in the catalogue (or list them in the pool file of
:attr:`recsys.settings.ControlSettings.editorial_pool_file`, merged into the flag at
training, so each model version carries its pool). The settings name the slots (1-based
positions, e.g. ``[3]``: one of the first five) and the lists that have them (``users``,
``regions``). Each slot takes the pool item that best matches the list's audience among the
items the list may show (the same rules as every other item: available, not seen, allowed for
the resident's age, not dismissed): by content affinity with the resident's history or the
district's pooled history, popularity breaking ties, and by popularity alone for a resident
without one (or with personalisation off). A filled slot is marked ``editorial`` with its
reason; a list shorter than a slot gets the pick at its end; no allowed pool item, no slot.
"""

from __future__ import annotations

import numpy as np

from recsys.query import Recommended
from recsys.ranking import top_k

TIE_BREAK = 1e-3
"""Weight of popularity (0..1) next to content affinity when ranking pool items."""


def ranked_pool(pool: np.ndarray, allowed: np.ndarray, popularity: np.ndarray,
                affinity: np.ndarray | None, count: int) -> np.ndarray:
    """Up to ``count`` allowed pool items (indices into the catalogue), best match first."""
    eligible = np.zeros(len(allowed), dtype=bool)
    eligible[pool] = True
    eligible &= allowed
    if count < 1 or not eligible.any():
        return np.zeros(0, dtype=np.int64)
    score = _unit(popularity) * TIE_BREAK
    if affinity is not None:
        score = score + np.nan_to_num(affinity, nan=0.0)
    return top_k(score, count, eligible)


def fill_slots(listed: list[Recommended], picks: list[Recommended], slots: list[int], n: int) -> list[Recommended]:
    """``listed`` with ``picks`` (best first) placed at the 1-based ``slots`` up to ``n`` items;
    a pick already in the list moves to its slot. A pick takes the score of the item whose place
    it takes, so scores still read in list order."""
    result = list(listed)
    for slot, pick in zip([s for s in slots if s <= n], picks, strict=False):
        result = [r for r in result if r.item != pick.item]
        place = min(slot - 1, len(result))
        held = result[place] if place < len(result) else (result[-1] if result else pick)
        result.insert(place, pick._replace(editorial=True, score=held.score))
    return result[:n]


def _unit(scores: np.ndarray) -> np.ndarray:
    finite = np.where(np.isfinite(scores), scores, np.nan)
    if not np.isfinite(finite).any():
        return np.zeros(len(scores), dtype=np.float64)
    low, high = np.nanmin(finite), np.nanmax(finite)
    if high <= low:
        return np.zeros(len(scores), dtype=np.float64)
    unit: np.ndarray = np.nan_to_num((finite - low) / (high - low), nan=0.0)
    return unit
