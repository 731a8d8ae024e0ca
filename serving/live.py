"""Interactions posted since the model was trained, folded into the next request at once.

Per user: item id -> summed action weight, in a bounded LRU of users. Keys are item *ids*,
not matrix indices, so the state carries over a model reload unchanged; each request maps
them onto the catalog it is served from, and items the new catalog no longer holds drop out.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from recsys.idmap import IdMap

MIN_LIVE_WEIGHT = 1e-3
"""Floor of a live weight: an action configured at weight 0 still marks the item as seen."""
MAX_LIVE_WEIGHT = 1e6
"""Ceiling of a live weight: a rating of 1e308 stars must not overflow the float32 scoring."""


class LiveInteractions:
    def __init__(self, max_users: int = 100_000, max_items_per_user: int = 500) -> None:
        self.max_users = max_users
        self.max_items_per_user = max_items_per_user
        self._users: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def add(self, user_id: str, item_id: str, weight: float) -> None:
        weight = bounded(weight)
        with self._lock:
            items = self._users.get(user_id)
            if items is None:
                items = self._users[user_id] = OrderedDict()
            else:
                self._users.move_to_end(user_id)
            items[item_id] = min(items.pop(item_id, 0.0) + weight, MAX_LIVE_WEIGHT)  # re-insert: most recent last
            while len(items) > self.max_items_per_user:
                items.popitem(last=False)
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)

    def forget(self, user_id: str) -> bool:
        """Drop everything kept for ``user_id`` (right to erasure); True if there was anything."""
        with self._lock:
            return self._users.pop(user_id, None) is not None

    def of(self, user_id: str) -> dict[str, float]:
        """A copy of the user's live weights by item id (empty if none)."""
        with self._lock:
            items = self._users.get(user_id)
            return dict(items) if items else {}

    def weights_for(self, user_id: str, items: IdMap) -> dict[int, float]:
        """The user's live weights keyed by index in ``items`` (ids it lacks are dropped)."""
        live = self.of(user_id)
        if not live:
            return {}
        mapped = {items.index_of(item_id): weight for item_id, weight in live.items()}
        mapped.pop(-1, None)
        return mapped


def bounded(weight: float) -> float:
    """A live weight within [MIN_LIVE_WEIGHT, MAX_LIVE_WEIGHT] (NaN counts as the floor)."""
    weight = float(weight)
    if math.isnan(weight):
        return MIN_LIVE_WEIGHT
    return min(max(weight, MIN_LIVE_WEIGHT), MAX_LIVE_WEIGHT)
