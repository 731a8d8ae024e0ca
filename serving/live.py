"""Interactions posted since the model was trained, folded into the next request at once.

Per user: item id -> the weights of its recent events with their event times, in a bounded
LRU of users. Keys are item *ids*, not matrix indices, so the state carries over a model
reload; each request maps them onto the catalog it is served from, and items the new
catalog no longer holds drop out.

A ``not_interested`` (:data:`recsys.contract.NEGATIVE_ACTIONS`) is no engagement: it is kept
apart, per user and item with its time (:meth:`LiveInteractions.dismissed_for`), never as a
weight, and a later engagement with the item takes it back. Dismissals are not expired at a
reload (the artifact has those it was trained on, but one it was trained without would lose them).

When a newly served model was trained on data up to ``data_end``, the events at or before
that time are in its history already: :meth:`LiveInteractions.expire_trained` drops them, so
they are not counted twice (a user's engagement with an item would otherwise grow at every
reload). The rule is the one a restarting server applies to the segments it replays
(:mod:`serving.peers`): an event is "trained on" when its time is not after ``data_end``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from recsys.contract import NEGATIVE_ACTIONS
from recsys.idmap import IdMap

MIN_LIVE_WEIGHT = 1e-3
"""Floor of a live weight: an action configured at weight 0 still marks the item as seen."""
MAX_LIVE_WEIGHT = 1e6
"""Ceiling of a live weight: a rating of 1e308 stars must not overflow the float32 scoring."""
MAX_EVENTS_PER_ITEM = 16
"""Events kept apart per user and item; beyond it the two oldest merge into one at the later
time (their sum then expires with the later of them: counted once too long, never lost)."""

Events = list[tuple[float, float]]
"""(event time in epoch seconds, weight), oldest first."""


class LiveInteractions:
    def __init__(self, max_users: int = 100_000, max_items_per_user: int = 500) -> None:
        self.max_users = max_users
        self.max_items_per_user = max_items_per_user
        self._users: OrderedDict[str, OrderedDict[str, Events]] = OrderedDict()
        self._dismissed: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def record(self, user_id: str, item_id: str, action: str, weight: float, at: float = math.inf) -> None:
        """Count one accepted interaction: a dismissal for a negative action, else :meth:`add`."""
        if action in NEGATIVE_ACTIONS:
            self.dismiss(user_id, item_id, at)
        else:
            self.add(user_id, item_id, weight, at)

    def dismiss(self, user_id: str, item_id: str, at: float) -> None:
        """The user said ``not_interested`` to the item at ``at`` (epoch seconds)."""
        with self._lock:
            items = self._dismissed.setdefault(user_id, {})
            self._dismissed.move_to_end(user_id)
            items[item_id] = max(items.get(item_id, -math.inf), at)
            while len(self._dismissed) > self.max_users:
                self._dismissed.popitem(last=False)

    def dismissed_for(self, user_id: str, items: IdMap) -> dict[int, float]:
        """The user's live dismissals keyed by index in ``items`` (ids it lacks are dropped)."""
        with self._lock:
            found = dict(self._dismissed.get(user_id, {}))
        mapped = {items.index_of(item_id): at for item_id, at in found.items()}
        mapped.pop(-1, None)
        return mapped

    def add(self, user_id: str, item_id: str, weight: float, at: float = math.inf) -> None:
        """Count one event of ``weight`` at time ``at`` (epoch seconds; +inf = never trained on)."""
        weight = bounded(weight)
        with self._lock:
            dismissed = self._dismissed.get(user_id)
            if dismissed and dismissed.get(item_id, math.inf) < at:  # engaged again after the dismissal
                del dismissed[item_id]
            items = self._users.get(user_id)
            if items is None:
                items = self._users[user_id] = OrderedDict()
            else:
                self._users.move_to_end(user_id)
            events = items.pop(item_id, [])  # re-inserted: most recent item last
            events.append((at, weight))
            events.sort(key=lambda event: event[0])
            if len(events) > MAX_EVENTS_PER_ITEM:
                (_, first), (second_at, second) = events[0], events[1]
                events[:2] = [(second_at, first + second)]
            items[item_id] = events
            while len(items) > self.max_items_per_user:
                items.popitem(last=False)
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)

    def forget(self, user_id: str) -> bool:
        """Drop everything kept for ``user_id`` (right to erasure); True if there was anything."""
        with self._lock:
            dismissed = self._dismissed.pop(user_id, None) is not None
            return self._users.pop(user_id, None) is not None or dismissed

    def expire_trained(self, data_end: float) -> int:
        """Drop the events at or before ``data_end`` (a newly served model has them); returns
        how many (user, item) pairs were left with none and removed."""
        removed = 0
        with self._lock:
            for user_id in list(self._users):
                items = self._users[user_id]
                for item_id in list(items):
                    kept = [event for event in items[item_id] if event[0] > data_end]
                    if kept:
                        items[item_id] = kept
                    else:
                        del items[item_id]
                        removed += 1
                if not items:
                    del self._users[user_id]
        return removed

    def of(self, user_id: str) -> dict[str, float]:
        """The user's live weight per item id: the sum of its events, bounded (empty if none)."""
        with self._lock:
            items = self._users.get(user_id)
            if not items:
                return {}
            return {item_id: min(math.fsum(w for _, w in events), MAX_LIVE_WEIGHT)
                    for item_id, events in items.items()}

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
