"""Beijing's sixteen districts: GB/T 2260 codes, names, approximate centroids, population.

The synthetic data generator places users and venues with this table, and reports can use
it to name a ``region_code``. Centroids are approximate geographic centres (degrees, WGS-84),
good for distances between districts, not for maps. Populations are the 2020 census counts
in units of 10,000 people, rounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class District:
    """One district and how the generator treats it."""

    code: str
    name: str
    lat: float
    lon: float
    urban: bool
    """One of the six core districts (all their users are urban)."""
    population: float
    """2020 census, in units of 10,000 people."""
    rural_share: float
    """Probability that a user living here is rural (0 for core districts)."""
    venue_weight: float
    """Relative number of cultural venues (theatres, galleries, cultural centres; in outer
    districts the many small township stations count too)."""


DISTRICTS: tuple[District, ...] = (
    District("110101", "东城区", 39.93, 116.42, True, 70.9, 0.0, 1.6),
    District("110102", "西城区", 39.91, 116.36, True, 110.6, 0.0, 1.6),
    District("110105", "朝阳区", 39.95, 116.50, True, 345.2, 0.0, 2.0),
    District("110106", "丰台区", 39.86, 116.25, True, 201.9, 0.0, 0.9),
    District("110107", "石景山区", 39.92, 116.19, True, 56.8, 0.0, 0.5),
    District("110108", "海淀区", 40.00, 116.26, True, 313.3, 0.0, 1.6),
    District("110109", "门头沟区", 39.98, 115.85, False, 39.3, 0.60, 0.7),
    District("110111", "房山区", 39.70, 115.90, False, 131.3, 0.65, 1.1),
    District("110112", "通州区", 39.80, 116.70, False, 184.0, 0.60, 1.2),
    District("110113", "顺义区", 40.13, 116.70, False, 132.4, 0.60, 1.0),
    District("110114", "昌平区", 40.20, 116.20, False, 226.9, 0.60, 1.2),
    District("110115", "大兴区", 39.65, 116.40, False, 199.4, 0.60, 1.1),
    District("110116", "怀柔区", 40.60, 116.55, False, 44.1, 0.70, 0.75),
    District("110117", "平谷区", 40.20, 117.15, False, 45.7, 0.75, 0.7),
    District("110118", "密云区", 40.45, 116.95, False, 52.8, 0.75, 0.75),
    District("110119", "延庆区", 40.50, 116.10, False, 34.6, 0.75, 0.7),
)

CODES: tuple[str, ...] = tuple(d.code for d in DISTRICTS)
CORE_CODES: frozenset[str] = frozenset(d.code for d in DISTRICTS if d.urban)
_BY_CODE = {d.code: d for d in DISTRICTS}


def by_code(code: str) -> District:
    """The district with GB/T 2260 ``code``; raises ``KeyError`` for an unknown code."""
    return _BY_CODE[code]


def name_of(code: str | None) -> str | None:
    """The Chinese name of a district code, ``None`` when unknown or missing."""
    district = _BY_CODE.get(code) if code is not None else None
    return district.name if district is not None else None


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))
