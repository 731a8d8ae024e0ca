"""Recommendation lists as JSON answers.

:func:`list_fields` gives the fields every list answer shares, for FastAPI to validate and
encode. The user list is the API's hot path, so :func:`user_list_json` writes its body
directly, byte for byte what JSONResponse's encoder would make of a
:class:`~serving.schemas.UserRecommendations`, re-encoding per request only the scores and
reasons (each item's fixed fields are encoded once per catalog).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any
from weakref import WeakKeyDictionary

from fastapi import Response

from recsys.catalog import Catalog
from recsys.delivery import DeliveryEngine
from recsys.query import RecommendationList
from serving.schemas import RecommendedItem


def list_fields(version: str, engine: DeliveryEngine, result: RecommendationList) -> dict[str, Any]:
    """``model_version``, ``generated_at``, ``fallback`` and ``items`` of a list answer."""
    catalog = engine.catalog
    items = [
        RecommendedItem(
            item_id=r.item_id, title=catalog.title[r.item], kind=catalog.kind_name(r.item),
            category=catalog.category_name(r.item), score=round(r.score, 6), reason=r.reason,
            editorial=r.editorial,
        )
        for r in result.items
    ]
    return {"model_version": version, "generated_at": _now(), "fallback": result.fallback, "items": items}


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""JSONResponse's encoding (UTF-8, compact, no NaN), built once instead of per request."""

_string = encode_basestring
"""How :data:`_ENCODER` writes a string (its C function, without the per-call type dispatch)."""

_ITEM_HEADS: WeakKeyDictionary[Catalog, dict[int, str]] = WeakKeyDictionary()
"""Per catalog, each item's encoded fixed fields: a list re-encodes only scores and reasons."""


def user_list_json(version: str, engine: DeliveryEngine, result: RecommendationList, user_id: str) -> Response:
    """A :class:`UserRecommendations` body, byte for byte what :data:`_ENCODER` makes of it."""
    heads = _ITEM_HEADS.setdefault(engine.catalog, {})
    items = ",".join(
        f'{heads.get(r.item) or _item_head(heads, engine.catalog, r.item)}{round(r.score, 6)!r},'
        f'"reason":{_string(r.reason)},"editorial":{"true" if r.editorial else "false"}}}'
        for r in result.items
    )
    fallback = "null" if result.fallback is None else _string(result.fallback)
    body = (f'{{"model_version":{_string(version)},"generated_at":"{_now()}","fallback":{fallback},'
            f'"items":[{items}],"user_id":{_string(user_id)}}}')
    return Response(body.encode("utf-8"), media_type="application/json")


def _item_head(heads: dict[int, str], catalog: Catalog, item: int) -> str:
    """``{"item_id":…,"title":…,"kind":…,"category":…,"score":`` for one item (then remembered)."""
    fields = {"item_id": catalog.items.id_of(item), "title": catalog.title[item], "kind": catalog.kind_name(item),
              "category": catalog.category_name(item)}
    heads[item] = head = _ENCODER.encode(fields)[:-1] + ',"score":'
    return head


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
