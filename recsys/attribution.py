"""Attribution: which served list an interaction counts for.

The rule (the README states it too): an interaction counts for a served list when

1. the list was served to the same user and holds the interaction's item, and
2. the interaction happened within the action's window after the list was served:
   ``list time <= interaction time <= list time + window`` (both edges count); defaults
   click 24 hours, reserve and attend 14 days; an action without a window (view,
   impression, ...) counts for no list.

With several such lists, the latest one served before the interaction wins (on equal times,
the one given last). An interaction that names its list (``recommendation_id``, sent by the
app) counts for that list when the list meets 1 and 2; a name that does not (a list of
another user, an expired one) is ignored and the rule decides, so a wrong or forged name
cannot credit a list.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

HOUR = 3600.0
DAY = 24 * HOUR

SEGMENT_TYPES = ("area_type", "age_band", "district")
"""The resident segments the online metrics of attributed lists are split by (besides ``all``)."""


def _default_windows() -> dict[str, float]:
    return {"click": 24 * HOUR, "reserve": 14 * DAY, "attend": 14 * DAY}


class AttributionSettings(BaseModel):
    """Per-action windows (seconds) and whether a served list counts as shown without impressions."""

    model_config = ConfigDict(extra="forbid")

    windows: dict[str, float] = Field(default_factory=_default_windows,
                                      description="seconds after a list during which an action counts for it")
    lists_count_as_shown: bool = Field(
        True, description="a served list counts as displayed when the app posts no impressions for it; "
                          "false: only items with an impression count as shown")


@dataclass(frozen=True)
class ServedList:
    recommendation_id: str
    user_id: str
    ts: float
    """Epoch seconds the list was served."""
    items: tuple[str, ...]


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    action: str
    ts: float
    recommendation_id: str | None = None


@dataclass
class _Candidates:
    """Per (user, item): the serving times and ids of the lists holding the item, in time order."""

    times: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def _index(lists: Iterable[ServedList]) -> tuple[dict[tuple[str, str], _Candidates], dict[str, ServedList]]:
    by_pair: dict[tuple[str, str], _Candidates] = {}
    by_id: dict[str, ServedList] = {}
    for served in sorted(lists, key=lambda s: s.ts):  # stable: equal times keep input order
        by_id[served.recommendation_id] = served
        for item in dict.fromkeys(served.items):
            found = by_pair.setdefault((served.user_id, item), _Candidates())
            found.times.append(served.ts)
            found.ids.append(served.recommendation_id)
    return by_pair, by_id


def _qualifies(served: ServedList, event: Interaction, window: float) -> bool:
    return (served.user_id == event.user_id and event.item_id in served.items
            and served.ts <= event.ts <= served.ts + window)


def attribute(lists: Iterable[ServedList], events: Sequence[Interaction],
              settings: AttributionSettings | None = None) -> list[str | None]:
    """For each interaction, the ``recommendation_id`` of the list it counts for (None: none)."""
    windows = (settings or AttributionSettings()).windows
    by_pair, by_id = _index(lists)
    result: list[str | None] = []
    for event in events:
        window = windows.get(event.action)
        if window is None:
            result.append(None)
            continue
        named = by_id.get(event.recommendation_id) if event.recommendation_id else None
        if named is not None and _qualifies(named, event, window):
            result.append(named.recommendation_id)
            continue
        found = by_pair.get((event.user_id, event.item_id))
        if found is None:
            result.append(None)
            continue
        latest = bisect.bisect_right(found.times, event.ts) - 1  # the last list served at or before it
        result.append(found.ids[latest] if latest >= 0 and event.ts - found.times[latest] <= window else None)
    return result
