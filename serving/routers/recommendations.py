"""Recommendation lists: for a user, for a district, and items similar to an item.

The user and similar-item handlers are ``async`` and compute on the event loop: one list
costs about a millisecond of numpy, which is cheaper to run inline than to hand to a worker
thread and back (measured: the thread hop added ~0.5 ms of CPU per request, and the GIL
gives the thread no parallelism anyway). The district handler stays in the thread pool:
its first call per district pools that district's users, which may take longer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from starlette.convertors import PathConvertor, register_url_convertor

from recsys.contract import MAX_ID_LENGTH
from recsys.delivery import DeliveryEngine, Filters, RecommendationList, UnknownItem, UnknownRegion, UserContext
from serving.deps import At, Count, Lat, Lon, Radius, ServedDep, ServicesDep, moment_of, place_of
from serving.schemas import RecommendedItem, RegionRecommendations, SimilarItems, UserRecommendations


class AnyIdConvertor(PathConvertor):
    """An id in a path may hold any character: ``/`` (like ``path``) and line breaks too."""

    regex = "(?s:.*)"


register_url_convertor("id", AnyIdConvertor())  # adds a name; no existing convertor changes

router = APIRouter(prefix="/v1", tags=["recommendations"])

Id = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]

NOT_FOUND = {404: {"description": "unknown id", "content": {"application/json": {"example": {"detail": "..."}}}}}


@router.get("/users/{user_id:id}/recommendations", response_model=UserRecommendations)
async def user_recommendations(
    user_id: Id, served: ServedDep, svc: ServicesDep, n: Count = 10, at: At = None,
    lat: Lat = None, lon: Lon = None, radius_km: Radius = None,
    kind: Annotated[str | None, Query(max_length=64, description="only this kind (event, opera, digital, ...)")] = None,
    category: Annotated[str | None, Query(max_length=64, description="only this category (戏曲, 音乐, ...)")] = None,
    region: Annotated[str | None, Query(
        max_length=64, description="the user's district, for the region fallback of an unknown user",
    )] = None,
    diversity: Annotated[float, Query(ge=0, le=1, description="0 = pure score order, 1 = vary categories most")] = 0.2,
) -> UserRecommendations:
    """Personal recommendations; a user the model cannot personalise gets a named fallback."""
    engine = served.engine
    place = place_of(lat, lon, radius_km)
    filters = Filters(at=moment_of(at, served), kind=kind, category=category, lat=place.lat, lon=place.lon,
                      radius_km=place.radius_km)
    context = UserContext(live_weights=svc.live.weights_for(user_id, engine.catalog.items))
    result = engine.for_user(user_id, n, filters, diversity=diversity, context=context, region=region)
    svc.metrics.fallback("users", result.fallback)
    return UserRecommendations(user_id=user_id, **_body(served.version, engine, result))


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
    svc.metrics.fallback("regions", result.fallback)
    return RegionRecommendations(region_code=region_code, **_body(served.version, engine, result))


@router.get("/items/{item_id:id}/similar", response_model=SimilarItems, responses=NOT_FOUND)
async def similar_items(item_id: Id, served: ServedDep, n: Count = 10, at: At = None) -> SimilarItems:
    """Items like this one that can still be shown at ``at``."""
    engine = served.engine
    try:
        result = engine.similar(item_id, n, Filters(at=moment_of(at, served)))
    except UnknownItem as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown item {item_id!r}") from exc
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
