"""The live catalogue: items created, replaced and amended through the API.

``PUT /v1/items/{item_id}`` creates or replaces an item (a column left out is empty),
``PATCH`` changes only the columns it names (``null`` empties one), and
``POST /v1/items/batch`` replaces many at once, each element judged on its own. Writing needs
a key with the ``write:items`` scope (the item feed of a provider or the platform).

Each item is checked by the rules ingest applies to a provider's catalogue rows
(:mod:`recsys.item_rules`); a refused one names the same reason code a quarantined row
carries. An accepted write is fsynced to this process's item segment before the answer and
applied to what every list shows at once (:mod:`serving.live_items`); the other workers
follow within about a second, and the next ``recsys ingest`` folds it into the store. A new
item is recommendable at once through its facets, and has similar items, without retraining.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, status
from pydantic import BaseModel, Field

from recsys.contract import ITEM_COLUMNS, Reason
from recsys.item_rules import ItemRow, Problem, check_item, field_text, tags_text
from recsys.live_catalog import ItemChange, row_texts
from serving.deps import ItemsWriterDep, ServedDep, Services, ServicesDep
from serving.routers.recommendations import NOT_FOUND, Id
from serving.schemas import Rejection

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["items"])

UNKNOWN_FIELD = "unknown_field"
"""Refusal of a column the data contract does not have (a misspelt ``hiden`` must not pass silently)."""
MISMATCHED_ID = "item_id_mismatch"
"""Refusal of a body whose ``item_id`` names another item than the path."""

_JSON_TYPES: dict[str, tuple[tuple[type, ...], Reason]] = {
    **{column: ((str, int, float), Reason.BAD_VALUE) for column in
       ("item_id", "title", "kind", "category", "region_code", "venue_id", "provider", "series_id")},
    "tags": ((str, list), Reason.BAD_VALUE),
    **{column: ((int, float, str), Reason.BAD_NUMBER) for column in ("lat", "lon", "capacity", "min_age")},
    **{column: ((str, int, float), Reason.BAD_TIME) for column in ("starts_at", "ends_at")},
    **{column: ((bool, int, str), Reason.BAD_VALUE) for column in ("is_free", "hidden", "editorial")},
}
"""The JSON types each column may be sent as (null always), and the reason a value of another type gets."""
_SCHEMA_TYPES = {str: {"type": "string"}, int: {"type": "number"}, float: {"type": "number"},
                 bool: {"type": "boolean"}, list: {"type": "array", "items": {"type": "string"}}}


def _value_schema(column: str) -> dict[str, Any]:
    kinds = [_SCHEMA_TYPES[t] for t in _JSON_TYPES[column][0]]
    unique = [k for i, k in enumerate(kinds) if k not in kinds[:i]]
    return {"anyOf": [*unique, {"type": "null"}]}


_ITEM_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {column: _value_schema(column) for column in ITEM_COLUMNS},
    "description": "catalogue columns of the data contract (README); times ISO-8601 or epoch seconds, tags a list "
                   "or |-separated; series_id links an event to its other sessions and its digital version",
}
_EXAMPLE = {"title": "《锁麟囊》全本", "kind": "opera", "category": "戏曲", "tags": ["京剧", "程派"],
            "region_code": "110102", "venue_id": "v0042", "lat": 39.915, "lon": 116.357,
            "starts_at": "2026-12-05T19:30:00+08:00", "ends_at": "2026-12-05T22:00:00+08:00", "capacity": 800,
            "provider": "市文化馆", "is_free": True, "series_id": "s-suolinnang"}


def _body_doc(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}}


class ItemWritten(BaseModel):
    item_id: str
    created: bool = Field(description="the id was new to the catalogue this server serves")
    item: dict[str, Any] = Field(description="the item as it is now served (typed columns)")


class ItemsWritten(BaseModel):
    accepted: int
    rejected: list[Rejection]


@router.put("/items/{item_id:id}", response_model=ItemWritten, responses=NOT_FOUND,
            openapi_extra=_body_doc(_ITEM_SCHEMA, _EXAMPLE))
def put_item(item_id: Id, key: ItemsWriterDep, body: Annotated[dict[str, Any], Body()], served: ServedDep,
             svc: ServicesDep) -> ItemWritten:
    """Create or replace an item: every column is the body's (a column left out is empty)."""
    texts = _texts(body, item_id)
    row = _checked(texts, served.bundle.settings.timezone)
    created = served.engine.catalog.items.index_of(row.item_id) < 0
    _write(svc, [ItemChange(row.item_id, texts, True, time.time())], key.app)
    return ItemWritten(item_id=row.item_id, created=created, item=_typed(row))


@router.patch("/items/{item_id:id}", response_model=ItemWritten, responses=NOT_FOUND,
              openapi_extra=_body_doc(_ITEM_SCHEMA, {"hidden": True}))
def patch_item(item_id: Id, key: ItemsWriterDep, body: Annotated[dict[str, Any], Body()], served: ServedDep,
               svc: ServicesDep) -> ItemWritten:
    """Change the named columns of a served item (e.g. ``hidden``, ``ends_at``, ``capacity``, ``starts_at``)."""
    catalog = served.engine.catalog
    texts = _texts(body, item_id)
    index = catalog.items.index_of(texts["item_id"] or "")
    if index < 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown item {item_id!r}; create it with PUT")
    given = {column: value for column, value in texts.items() if column in body and column != "item_id"}
    row = _checked({**row_texts(catalog, index), **given}, served.bundle.settings.timezone)
    _write(svc, [ItemChange(row.item_id, given, False, time.time())], key.app)
    return ItemWritten(item_id=row.item_id, created=False, item=_typed(row))


@router.post("/items/batch", response_model=ItemsWritten,
             openapi_extra=_body_doc({"type": "array", "items": {**_ITEM_SCHEMA, "required": ["item_id"]}},
                                     [{"item_id": "op000123", **_EXAMPLE}]))
def post_items(key: ItemsWriterDep, batch: Annotated[list[Any], Body()], served: ServedDep,
               svc: ServicesDep) -> ItemsWritten:
    """Create or replace many items (each as ``PUT`` would); a bad element is listed, the others kept."""
    limit = svc.settings.max_item_batch
    if len(batch) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=f"at most {limit} items per request, "
                                                                      f"got {len(batch)}")
    timezone = served.bundle.settings.timezone
    changes: list[ItemChange] = []
    rejected: list[Rejection] = []
    now = time.time()
    for index, element in enumerate(batch):
        try:
            if not isinstance(element, dict):
                raise _Refused(Reason.MISSING_FIELD, "an item must be a JSON object")
            texts = _texts(element, None)
            row = _checked(texts, timezone)
        except _Refused as refused:
            rejected.append(Rejection(index=index, reason=refused.reason, detail=refused.message))
            continue
        changes.append(ItemChange(row.item_id, {**texts, "item_id": row.item_id}, True, now))
    if changes:
        _write(svc, changes, key.app)
    return ItemsWritten(accepted=len(changes), rejected=rejected)


class _Refused(HTTPException):
    """An item refused with a contract reason: a 422 naming it (or one element of a batch)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _texts(body: dict[str, Any], path_id: str | None) -> dict[str, str | None]:
    """The body's columns as the texts a provider file would carry; the path names the item."""
    unknown = sorted(set(body) - set(ITEM_COLUMNS))
    if unknown:
        raise _Refused(UNKNOWN_FIELD, f"not a catalogue column: {', '.join(map(repr, unknown))}; "
                                      f"columns are {', '.join(ITEM_COLUMNS)}")
    for column, value in body.items():
        allowed, reason = _JSON_TYPES[column]
        if value is not None and (not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed
                                  or isinstance(value, list) and not all(isinstance(v, str) for v in value)):
            raise _Refused(reason.value, f"{column}: a JSON {type(value).__name__} is not a value of this column")
    texts = {column: field_text(body.get(column)) for column in ITEM_COLUMNS}
    texts["tags"] = tags_text(body.get("tags"))
    if path_id is not None:
        given = (texts["item_id"] or "").strip()
        if given and given != path_id.strip():
            raise _Refused(MISMATCHED_ID, f"the body names item {given!r}, the path {path_id!r}")
        texts["item_id"] = path_id.strip() or None
    return texts


def _checked(texts: dict[str, str | None], timezone: str) -> ItemRow:
    checked = check_item(texts, timezone)
    if isinstance(checked, Problem):
        raise _Refused(checked.reason.value, checked.detail)
    return checked


def _write(svc: Services, changes: list[ItemChange], app: str | None) -> None:
    try:
        svc.items.write(changes, app)
    except OSError as exc:  # nothing was acknowledged or applied: the client may retry
        log.exception("could not persist %d catalogue writes", len(changes))
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="could not store the items; retry later") from exc
    svc.holder.refresh_overlay()


def _typed(row: ItemRow) -> dict[str, Any]:
    """The row as JSON values: tags a list, times ISO-8601 in UTC."""
    typed = {column: list(value) if isinstance(value, tuple) else value for column, value in vars(row).items()}
    for column in ("starts_at", "ends_at"):
        if typed[column] is not None:
            typed[column] = datetime.fromtimestamp(typed[column], UTC).isoformat()
    return typed
