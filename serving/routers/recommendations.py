"""Recommendation lists: for a user, for a district, and items similar to an item.

The user and similar-item handlers are ``async`` and compute on the event loop: one list
costs about a millisecond of numpy, which is cheaper to run inline than to hand to a worker
thread and back (measured: the thread hop added ~0.5 ms of CPU per request, and the GIL
gives the thread no parallelism anyway). The district handler stays in the thread pool:
its first call per district pools that district's users, which may take longer.

The user list is the API's hot path (measured: FastAPI's per-parameter query handling and
response-model validation cost as much CPU as the whole precomputed-candidate lookup), so:
its query is one pydantic model validated in one call (:mod:`serving.list_query`, as every
list's is; :mod:`serving.list_filters` turns it into the engine's filters and the page); the
served model is read directly rather than injected; and the body goes out already
serialised (:mod:`serving.encode`), so the declared ``response_model`` documents it (tests
hold the body to it) but FastAPI neither validates nor re-encodes a list the engine built
field by field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from starlette.convertors import PathConvertor, register_url_convertor

from recsys.contract import MAX_ID_LENGTH
from recsys.query import UnknownItem, UnknownRegion, UserContext
from recsys.substitution import marked_full
from serving import substitutes
from serving.deps import PersonalReaderDep, ServedDep, Services, ServicesDep, place_of, served_model
from serving.encode import list_fields, user_list_json
from serving.list_filters import check_age_band, cursor_after, list_filters
from serving.list_query import RegionListQuery, SimilarListQuery, UserListQuery, parse_query, query_parameters
from serving.request_answers import lift_answers
from serving.request_book import book_of
from serving.schemas import RegionRecommendations, SimilarItems, UserRecommendations
from serving.served_lists import CHAMPION, record_list, record_list_blocking


class AnyIdConvertor(PathConvertor):
    """An id in a path may hold any character: ``/`` (like ``path``) and line breaks too."""

    regex = "(?s:.*)"


register_url_convertor("id", AnyIdConvertor())  # adds a name; no existing convertor changes

router = APIRouter(prefix="/v1", tags=["recommendations"])

Id = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]

NOT_FOUND = {404: {"description": "unknown id", "content": {"application/json": {"example": {"detail": "..."}}}}}


@router.get("/users/{user_id:id}/recommendations", response_model=UserRecommendations,
            openapi_extra={"parameters": query_parameters(UserListQuery)})
async def user_recommendations(user_id: Id, request: Request, _: PersonalReaderDep) -> Response:
    """Personal recommendations; a user the model cannot personalise gets a named fallback.

    Needs a key with the ``read`` scope: the caller is the app that signed this resident in.
    """
    served = await served_model(request)  # called, not injected: one dependency pass less per request
    query = parse_query(UserListQuery, request)
    svc: Services = request.app.state.services
    served, variant = svc.experiment.serving(user_id, served)  # the champion unless an A/B test assigns
    engine = served.engine
    place = place_of(query.lat, query.lon, query.radius_km)
    filters, page = list_filters(query, served, kind=query.kind, category=query.category, place=place)
    context = UserContext(live_weights=svc.live.weights_for(user_id, engine.catalog.items),
                          dismissed=svc.live.dismissed_for(user_id, engine.catalog.items),
                          controls=svc.controls.of(user_id))
    result = engine.for_user(user_id, query.n, filters, diversity=query.diversity, context=context,
                             region=query.region)
    result = substitutes.for_user(served, result, user_id, query.n, filters, diversity=query.diversity,
                                  context=context, region=query.region, lang=svc.settings.lang)
    result = lift_answers(result, user_id, book_of(request), engine, filters, query.n, svc.settings.lang)
    svc.metrics.listed("users", result.fallback, len(result.items))
    name = await record_list(svc, "users", served.version, variant, result, page, query,
                             user_id=None if user_id in svc.erased else user_id)
    return user_list_json(served.version, engine, result, user_id, filters,
                          cursor_after(served, page, result, query.n), name)


@router.get("/regions/{region_code}/recommendations", response_model=RegionRecommendations, responses=NOT_FOUND,
            openapi_extra={"parameters": query_parameters(RegionListQuery)})
def region_recommendations(
    region_code: Annotated[str, Path(min_length=1, max_length=64)], request: Request, served: ServedDep,
    svc: ServicesDep,
) -> RegionRecommendations:
    """What a district's residents (optionally one age band) would like."""
    query = parse_query(RegionListQuery, request)
    check_age_band(query.age_band)
    engine = served.engine
    filters, page = list_filters(query, served, kind=query.kind)
    try:
        result = engine.for_region(region_code, query.n, filters, age_band=query.age_band or None)
    except UnknownRegion as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown region {region_code!r}") from exc
    result = substitutes.for_region(served, result, region_code, query.n, filters, age_band=query.age_band or None,
                                    lang=svc.settings.lang)
    svc.metrics.listed("regions", result.fallback, len(result.items))
    name = record_list_blocking(svc, "regions", served.version, CHAMPION, result, page, query,
                                region_code=region_code)
    return RegionRecommendations(region_code=region_code, **list_fields(
        served.version, engine, result, filters, cursor_after(served, page, result, query.n), name))


@router.get("/items/{item_id:id}/similar", response_model=SimilarItems, responses=NOT_FOUND,
            openapi_extra={"parameters": query_parameters(SimilarListQuery)})
async def similar_items(item_id: Id, request: Request, served: ServedDep, svc: ServicesDep) -> SimilarItems:
    """Items like this one that can still be shown at ``at``."""
    query = parse_query(SimilarListQuery, request)
    engine = served.engine
    filters, page = list_filters(query, served)
    try:
        result = engine.similar(item_id, query.n, filters)
    except UnknownItem as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown item {item_id!r}") from exc
    result = marked_full(result, engine.catalog)
    svc.metrics.listed("similar", result.fallback, len(result.items))
    name = await record_list(svc, "similar", served.version, CHAMPION, result, page, query, target_item=item_id)
    return SimilarItems(item_id=item_id, **list_fields(
        served.version, engine, result, filters, cursor_after(served, page, result, query.n), name))
