"""``senior_mode``: what a 60+ resident who chose it is offered first.

Older residents asked for events they can reach and attend safely: near home, in daylight,
free, or digital (watched from home). A resident in the ``60+`` band with ``senior_mode`` on
gets the weights of :class:`recsys.settings.SeniorWeights` added to their min-max normalised
scores, one weight per quality an item has. The mode means nothing for other bands (a
younger resident's choice is recorded but changes no list).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from recsys.catalog import Catalog
from recsys.settings import SeniorWeights

SENIOR_BAND = "60+"


def applies(age_band: str | None, senior_mode: bool) -> bool:
    return senior_mode and age_band == SENIOR_BAND


def senior_bonus(catalog: Catalog, weights: SeniorWeights, *, timezone: str, lat: float | None = None,
                 lon: float | None = None, region: str | None = None) -> np.ndarray:
    """Per item, the sum of the weights of the qualities it has (float32)."""
    placed = catalog.has_place()
    bonus = np.zeros(len(catalog), dtype=np.float32)
    if lat is not None and lon is not None:
        near = placed & (np.nan_to_num(catalog.distance_km(lat, lon), nan=np.inf) <= weights.nearby_km)
    elif region is not None:
        near = placed & catalog.region_is(region)
    else:
        near = np.zeros(len(catalog), dtype=bool)
    digital = ~placed | catalog.kind_is("digital")
    bonus += weights.nearby * near
    bonus += weights.daytime * _daytime(catalog, weights, timezone)
    bonus += weights.free * catalog.is_free
    bonus += weights.digital * digital
    return bonus


def _daytime(catalog: Catalog, weights: SeniorWeights, timezone: str) -> np.ndarray:
    """Items starting within the day's hours (local time), or with no start time."""
    offset = ZoneInfo(timezone).utcoffset(datetime.now())  # the zone's current offset: DST shifts an hour at most
    seconds = offset.total_seconds() if offset is not None else 0.0
    hours = np.mod((catalog.starts_at + seconds) / 3600.0, 24.0)
    within = (hours >= weights.day_start_hour) & (hours < weights.day_end_hour)
    daytime: np.ndarray = np.isnan(catalog.starts_at) | within
    return daytime
