"""Recommendation lists as JSON answers.

:func:`list_fields` gives the fields every list answer shares, for FastAPI to validate and
encode. The user list is the API's hot path, so :func:`user_list_json` writes its body
directly, byte for byte what JSONResponse's encoder would make of a
:class:`~serving.schemas.UserRecommendations`, re-encoding per request only what the request
decides (score, reason, editorial, full, distance): each item's fixed fields (title, times in
the engine's time zone, venue, district, place, price, provider) are made once per served
catalogue (:class:`RenderFields`), never per request.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any
from weakref import WeakKeyDictionary
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import Response

from recsys.catalog import Catalog
from recsys.delivery import DeliveryEngine
from recsys.query import Filters, RecommendationList
from serving.exposures import ListName
from serving.schemas import RecommendedItem


def list_fields(version: str, engine: DeliveryEngine, result: RecommendationList, filters: Filters,
                next_cursor: str | None = None, name: ListName | None = None) -> dict[str, Any]:
    """``model_version``, ``generated_at``, ``fallback``, ``items``, ``next_cursor``, ``recommendation_id``
    and ``variant`` of a list answer."""
    catalog = engine.catalog
    render = _render_fields(engine)
    distances = _distances(catalog, result, filters)
    items = [
        RecommendedItem(
            item_id=r.item_id, title=catalog.title[r.item], kind=catalog.kind_name(r.item),
            category=catalog.category_name(r.item), **render.of(r.item), score=round(r.score, 6), reason=r.reason,
            editorial=r.editorial, full=r.full, distance_km=distance,
        )
        for r, distance in zip(result.items, distances, strict=True)
    ]
    named = {"recommendation_id": name.recommendation_id, "variant": name.variant} if name is not None else {}
    return {"model_version": version, "generated_at": _now(), "fallback": result.fallback, "items": items,
            "next_cursor": next_cursor, **named}


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""JSONResponse's encoding (UTF-8, compact, no NaN), built once instead of per request."""

_string = encode_basestring
"""How :data:`_ENCODER` writes a string (its C function, without the per-call type dispatch)."""


class RenderFields:
    """Per served catalogue, each item's fixed fields: as keyword arguments of a
    :class:`RecommendedItem` and as the encoded head of its JSON object (up to ``"score":``),
    made on an item's first listing and kept, so a request encodes only what it decides."""

    def __init__(self, catalog: Catalog, timezone: str) -> None:
        self.catalog = catalog
        self.zone = ZoneInfo(timezone)
        self.fields: dict[int, dict[str, Any]] = {}
        self.heads: dict[int, str] = {}

    def of(self, item: int) -> dict[str, Any]:
        """``starts_at`` .. ``provider`` of ``item``."""
        found = self.fields.get(item)
        if found is None:
            catalog = self.catalog
            found = self.fields[item] = {
                "starts_at": self._time(catalog.starts_at[item]), "ends_at": self._time(catalog.ends_at[item]),
                "venue_id": _entry(catalog.venue, item),
                "region_code": _code_name(catalog.region, catalog.regions, item),
                "lat": _number(catalog.lat[item]), "lon": _number(catalog.lon[item]),
                "is_free": bool(catalog.is_free[item]), "provider": _entry(catalog.provider, item),
            }
        return found

    def head(self, item: int) -> str:
        """``{"item_id":…,"title":…,…,"provider":…,"score":`` of ``item``."""
        found = self.heads.get(item)
        if found is None:
            catalog = self.catalog
            fields = {"item_id": catalog.items.id_of(item), "title": catalog.title[item],
                      "kind": catalog.kind_name(item), "category": catalog.category_name(item), **self.of(item)}
            found = self.heads[item] = _ENCODER.encode(fields)[:-1] + ',"score":'
        return found

    def _time(self, epoch: float) -> str | None:
        return None if math.isnan(epoch) else datetime.fromtimestamp(epoch, self.zone).isoformat()


_RENDER: WeakKeyDictionary[Catalog, RenderFields] = WeakKeyDictionary()


def user_list_json(version: str, engine: DeliveryEngine, result: RecommendationList, user_id: str,
                   filters: Filters, next_cursor: str | None = None, name: ListName | None = None) -> Response:
    """A :class:`UserRecommendations` body, byte for byte what :data:`_ENCODER` makes of it."""
    render = _render_fields(engine)
    distances = _distances(engine.catalog, result, filters)
    items = ",".join(
        f'{render.head(r.item)}{round(r.score, 6)!r},"reason":{_string(r.reason)},'
        f'"editorial":{"true" if r.editorial else "false"},"full":{"true" if r.full else "false"},'
        f'"distance_km":{"null" if distance is None else repr(distance)}}}'
        for r, distance in zip(result.items, distances, strict=True)
    )
    fallback = "null" if result.fallback is None else _string(result.fallback)
    cursor = "null" if next_cursor is None else _string(next_cursor)
    name = name or ListName("", "champion")
    body = (f'{{"model_version":{_string(version)},"generated_at":"{_now()}","fallback":{fallback},'
            f'"items":[{items}],"next_cursor":{cursor},"recommendation_id":{_string(name.recommendation_id)},'
            f'"variant":{_string(name.variant)},"user_id":{_string(user_id)}}}')
    return Response(body.encode("utf-8"), media_type="application/json")


def _render_fields(engine: DeliveryEngine) -> RenderFields:
    render = _RENDER.get(engine.catalog)
    if render is None:
        render = _RENDER[engine.catalog] = RenderFields(engine.catalog, engine.bundle.settings.timezone)
    return render


def _distances(catalog: Catalog, result: RecommendationList, filters: Filters) -> list[float | None]:
    """Each listed item's distance in km from the request's place (None without a place, or for an
    item without one), rounded to metres."""
    if filters.lat is None or filters.lon is None or not result.items:
        return [None] * len(result.items)
    found = catalog.distance_km(filters.lat, filters.lon, np.fromiter((r.item for r in result.items), np.int64))
    return [None if math.isnan(d) else round(d, 3) for d in found.tolist()]


def _entry(values: list[str | None], item: int) -> str | None:
    return values[item] if item < len(values) else None


def _code_name(codes: np.ndarray, names: list[str], item: int) -> str | None:
    code = int(codes[item])
    return names[code] if code >= 0 else None


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
