"""不感兴趣: a resident's ``not_interested`` on an item, and what it does to their lists.

The item itself never returns to that resident (until they engage with it again, which a
later event records). For ``not_interested_days`` after the dismissal, the item's
``not_interested_similar`` nearest items (by the model's item similarity, else by content:
what ``/v1/items/{item_id}/similar`` lists first at the same moment) are demoted out of the
resident's lists, so one "not this" also means "not more of the same for a while".
Training treats the dismissal as negative evidence: it cancels the resident's earlier events
on the item (:func:`features.events.without_dismissed`), and the artifact keeps the
dismissals so the rule holds after a retrain (``dismissed.npz``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from recsys.ranking import top_k

DAY_SECONDS = 86_400.0


def left_out(n_items: int, dismissed: Mapping[int, float], at: float, *, days: float, similar: int,
             similarity_of: Callable[[int], np.ndarray], available: np.ndarray) -> np.ndarray:
    """Items to leave out of a list at ``at`` for these dismissals (item index -> epoch seconds):
    each dismissed item, and the ``similar`` nearest available items of those dismissed within
    ``days``."""
    out = np.zeros(n_items, dtype=bool)
    for item, when in dismissed.items():
        out[item] = True
        if similar > 0 and at - when <= days * DAY_SECONDS:
            closeness = similarity_of(item)
            eligible = available & (closeness > 0)
            eligible[item] = False
            out[top_k(closeness, similar, eligible)] = True
    return out
