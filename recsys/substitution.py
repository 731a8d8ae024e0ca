"""Substitution (线上+线下): a full or out-of-reach event gives its place to another version of it.

Items sharing a ``series_id`` are versions of one programme: an offline event, its other
sessions, its digital broadcast. When a list leaves an event out because it is full
(:mod:`recsys.capacity`) or beyond the request's radius, and the event would otherwise have
been listed, its best alternative in the series takes its place, with a reason that says
why ("现场已满，可看线上直播"). "Would otherwise have been listed" is read from the *shadow*
list: the same request answered with full events kept and no radius. An alternative must be
one the list itself may show (available, within the filters, not already engaged with); one
already listed lower moves up to the place.

Which alternative: another session the resident can attend (placed, not full), the nearest
first when the request has a place, else the earliest; failing that a digital version
(no place).
"""

from __future__ import annotations

import math
from weakref import WeakKeyDictionary

import numpy as np

from recsys.catalog import Catalog
from recsys.query import Filters, RecommendationList, Recommended

PHRASES = {
    "zh": {("full", "digital"): "现场已满，可看线上直播", ("full", "session"): "现场已满，可选同系列其他场次",
           ("far", "digital"): "距离较远，可看线上直播", ("far", "session"): "附近有同系列场次"},
    "en": {("full", "digital"): "Fully booked on site: watch it live online",
           ("full", "session"): "Fully booked: another session of the series",
           ("far", "digital"): "Too far away: watch it live online",
           ("far", "session"): "Another session of the series, nearer to you"},
}

_SERIES: WeakKeyDictionary[Catalog, dict[str, np.ndarray]] = WeakKeyDictionary()
"""Per catalogue, the members of each series with more than one item (a catalogue never changes)."""


def series_of(catalog: Catalog) -> dict[str, np.ndarray]:
    """Each series with at least two items, as item indices."""
    found = _SERIES.get(catalog)
    if found is None:
        members: dict[str, list[int]] = {}
        for index, series in enumerate(catalog.series):
            if series:
                members.setdefault(series, []).append(index)
        found = _SERIES[catalog] = {s: np.array(m, dtype=np.int64) for s, m in members.items() if len(m) > 1}
    return found


def may_substitute(catalog: Catalog, filters: Filters, *, full_left_out: bool) -> bool:
    """Whether a list of ``catalog`` at ``filters`` can have a substitute at all (else skip the shadow list);
    ``full_left_out``: whether full events are left out of the lists (rather than listed and marked)."""
    series = series_of(catalog)
    if not series:
        return False
    linked = np.zeros(len(catalog), dtype=bool)
    for members in series.values():
        linked[members] = True
    return (full_left_out and bool((catalog.full & linked).any())) or filters.radius_km is not None


def substituted(listed: RecommendationList, shadow: RecommendationList, catalog: Catalog, allowed: np.ndarray,
                filters: Filters, n: int, lang: str = "zh") -> RecommendationList:
    """``listed`` with an alternative at the place of each shadow item it lacks for being full or far."""
    series = series_of(catalog)
    shown = {r.item for r in listed.items}
    taken: set[int] = set()
    placed: list[tuple[int, Recommended]] = []
    for position, missing in enumerate(shadow.items):
        if missing.item in shown or not catalog.series[missing.item]:
            continue
        cause = _cause(catalog, missing.item, filters)
        members = series.get(catalog.series[missing.item] or "")
        if cause is None or members is None:
            continue
        alternative = _best_alternative(catalog, members, allowed, taken, filters)
        if alternative is None:
            continue
        taken.add(alternative)
        kind = "digital" if math.isnan(catalog.lat[alternative]) else "session"
        placed.append((position, Recommended(alternative, catalog.items.id_of(alternative), missing.score,
                                             PHRASES[lang][(cause, kind)])))
    if not placed:
        return listed
    items = [r for r in listed.items if r.item not in taken]
    for position, item in placed:
        items.insert(min(position, len(items)), item)
    return RecommendationList(items[:n], fallback=listed.fallback)


def marked_full(listed: RecommendationList, catalog: Catalog) -> RecommendationList:
    """``listed`` with each full item marked (where full events are listed at all)."""
    if not catalog.full.any() or not any(catalog.full[r.item] for r in listed.items):
        return listed
    return RecommendationList([r._replace(full=bool(catalog.full[r.item])) for r in listed.items],
                              fallback=listed.fallback)


def _cause(catalog: Catalog, item: int, filters: Filters) -> str | None:
    """Why the list left ``item`` out: ``full``, ``far`` (beyond the radius), or None (another reason)."""
    if catalog.full[item] and catalog.hidden[item]:  # left out for being full (not listed and marked)
        return "full"
    if filters.radius_km is not None and filters.lat is not None and filters.lon is not None:
        distance = float(catalog.distance_km(filters.lat, filters.lon, np.array([item]))[0])
        if distance > filters.radius_km:
            return "far"
    return None


def _best_alternative(catalog: Catalog, members: np.ndarray, allowed: np.ndarray, taken: set[int],
                      filters: Filters) -> int | None:
    candidates = [int(m) for m in members.tolist() if allowed[m] and int(m) not in taken]
    if not candidates:
        return None
    chosen = np.array(candidates, dtype=np.int64)
    placed = ~np.isnan(catalog.lat[chosen])
    if filters.lat is not None and filters.lon is not None:
        nearness = np.nan_to_num(catalog.distance_km(filters.lat, filters.lon, chosen), nan=np.inf)
    else:
        nearness = np.nan_to_num(catalog.starts_at[chosen], nan=np.inf)
    order = np.lexsort((nearness, ~placed))  # sessions first, then the nearest (or earliest)
    return int(chosen[order[0]])
