"""Recommendation lists: for a user, for a district, and items similar to an item.

The user and similar-item handlers are ``async`` and compute on the event loop: one list
costs about a millisecond of numpy, which is cheaper to run inline than to hand to a worker
thread and back (measured: the thread hop added ~0.5 ms of CPU per request, and the GIL
gives the thread no parallelism anyway). The district handler stays in the thread pool:
its first call per district pools that district's users, which may take longer.

The user list is the API's hot path (measured: FastAPI's per-parameter query handling and
response-model validation cost as much CPU as the whole precomputed-candidate lookup), so:
its query is one pydantic model validated in one call (:class:`UserListQuery`, documented
as FastAPI documents a query model, with FastAPI's 422 on bad input); the served model is
read directly rather than injected; and the body goes out already serialised, so the
declared ``response_model`` documents it (tests hold the body to it) but FastAPI neither
validates nor re-encodes a list the engine built field by field.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Annotated, Any, TypeVar
from weakref import WeakKeyDictionary

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.convertors import PathConvertor, register_url_convertor

from recsys.catalog import Catalog
from recsys.contract import MAX_ID_LENGTH
from recsys.delivery import DeliveryEngine
from recsys.query import Filters, RecommendationList, UnknownItem, UnknownRegion, UserContext
from serving.deps import (
    At,
    Count,
    Lat,
    Lon,
    PersonalReaderDep,
    Radius,
    ServedDep,
    Services,
    ServicesDep,
    moment_of,
    place_of,
    served_model,
)
from serving.schemas import RecommendedItem, RegionRecommendations, SimilarItems, UserRecommendations


class AnyIdConvertor(PathConvertor):
    """An id in a path may hold any character: ``/`` (like ``path``) and line breaks too."""

    regex = "(?s:.*)"


register_url_convertor("id", AnyIdConvertor())  # adds a name; no existing convertor changes

router = APIRouter(prefix="/v1", tags=["recommendations"])

Id = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]

QueryModel = TypeVar("QueryModel", bound=BaseModel)

NOT_FOUND = {404: {"description": "unknown id", "content": {"application/json": {"example": {"detail": "..."}}}}}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` for a query model, as FastAPI documents a query parameter model."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field_schema}
        if "description" in field_schema:
            parameter["description"] = field_schema["description"]
        parameters.append(parameter)
    return parameters


def parse_query(model: type[QueryModel], request: Request) -> QueryModel:
    """The request's query as ``model``; a 422 like FastAPI's own when it does not fit."""
    try:
        return model.model_validate(request.query_params)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]) from None


class UserListQuery(BaseModel):
    """The query of a user's list, validated in one pass (the constraints FastAPI documents)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    n: Count = 10
    at: At = None
    lat: Lat = None
    lon: Lon = None
    radius_km: Radius = None
    kind: Annotated[str | None, Query(max_length=64, description="only this kind (event, opera, digital, ...)")] = None
    category: Annotated[str | None, Query(max_length=64, description="only this category (戏曲, 音乐, ...)")] = None
    region: Annotated[str | None, Query(
        max_length=64, description="the user's district, for the region fallback of an unknown user",
    )] = None
    diversity: Annotated[float, Query(ge=0, le=1, description="0 = pure score order, 1 = vary categories most")] = 0.2


@router.get("/users/{user_id:id}/recommendations", response_model=UserRecommendations,
            openapi_extra={"parameters": query_parameters(UserListQuery)})
async def user_recommendations(user_id: Id, request: Request, _: PersonalReaderDep) -> Response:
    """Personal recommendations; a user the model cannot personalise gets a named fallback.

    Needs a key with the ``read`` scope: the caller is the app that signed this resident in.
    """
    served = await served_model(request)  # called, not injected: one dependency pass less per request
    query = parse_query(UserListQuery, request)
    svc: Services = request.app.state.services
    engine = served.engine
    place = place_of(query.lat, query.lon, query.radius_km)
    filters = Filters(at=moment_of(query.at, served), kind=query.kind, category=query.category, lat=place.lat,
                      lon=place.lon, radius_km=place.radius_km)
    context = UserContext(live_weights=svc.live.weights_for(user_id, engine.catalog.items))
    result = engine.for_user(user_id, query.n, filters, diversity=query.diversity, context=context,
                             region=query.region)
    svc.metrics.listed("users", result.fallback, len(result.items))
    return _user_list_json(served.version, engine, result, user_id)


@router.get("/regions/{region_code}/recommendations", response_model=RegionRecommendations, responses=NOT_FOUND)
def region_recommendations(
    region_code: Annotated[str, Path(min_length=1, max_length=64)], served: ServedDep, svc: ServicesDep,
    n: Count = 10, at: At = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    age_band: Annotated[str | None, Query(max_length=32, examples=["60+"])] = None,
) -> RegionRecommendations:
    """What a district's residents (optionally one age band) would like."""
    engine = served.engine
    try:
        result = engine.for_region(region_code, n, Filters(at=moment_of(at, served), kind=kind), age_band=age_band)
    except UnknownRegion as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown region {region_code!r}") from exc
    svc.metrics.listed("regions", result.fallback, len(result.items))
    return RegionRecommendations(region_code=region_code, **_body(served.version, engine, result))


@router.get("/items/{item_id:id}/similar", response_model=SimilarItems, responses=NOT_FOUND)
async def similar_items(item_id: Id, served: ServedDep, svc: ServicesDep, n: Count = 10,
                        at: At = None) -> SimilarItems:
    """Items like this one that can still be shown at ``at``."""
    engine = served.engine
    try:
        result = engine.similar(item_id, n, Filters(at=moment_of(at, served)))
    except UnknownItem as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown item {item_id!r}") from exc
    svc.metrics.listed("similar", result.fallback, len(result.items))
    return SimilarItems(item_id=item_id, **_body(served.version, engine, result))


def _body(version: str, engine: DeliveryEngine, result: RecommendationList) -> dict:
    catalog = engine.catalog
    items = [
        RecommendedItem(
            item_id=r.item_id, title=catalog.title[r.item], kind=catalog.kind_name(r.item),
            category=catalog.category_name(r.item), score=round(r.score, 6), reason=r.reason,
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


def _user_list_json(version: str, engine: DeliveryEngine, result: RecommendationList, user_id: str) -> Response:
    """A :class:`UserRecommendations` body, byte for byte what :data:`_ENCODER` makes of it."""
    heads = _ITEM_HEADS.setdefault(engine.catalog, {})
    items = ",".join(
        f'{heads.get(r.item) or _item_head(heads, engine.catalog, r.item)}{round(r.score, 6)!r},'
        f'"reason":{_string(r.reason)}}}'
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
