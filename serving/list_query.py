"""The queries of the lists: pydantic models, each validated in one call.

Every list (a user's, a district's, similar items) takes :class:`ListQuery`'s parameters: its
length and moment, a start-time window, free items only, ids to leave out and a cursor.
A user's list is the API's hot path, and FastAPI's per-parameter query handling cost as much
CPU as the whole precomputed-candidate lookup (measured). So its query is one model,
validated by :func:`parse_query` with FastAPI's own 422 on bad input, and documented by
:func:`query_parameters` as FastAPI documents a query parameter model.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from recsys.contract import MAX_ID_LENGTH
from recsys.ranking import DEFAULT_DIVERSITY
from serving.deps import At, Count, Lat, Lon, Radius
from serving.paging import MAX_CURSOR_LENGTH

QueryModel = TypeVar("QueryModel", bound=BaseModel)


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
    """The request's query as ``model``; a 422 like FastAPI's own when it does not fit.

    A parameter given more than once is a list where the model declares one (``exclude``),
    else its last value counts, as FastAPI reads it.
    """
    params = request.query_params
    repeated = [name for name in getattr(model, "LIST_FIELDS", ()) if name in params]
    data: Any = params
    if repeated:
        data = {**params, **{name: params.getlist(name) for name in repeated}}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]) from None


MAX_EXCLUDE = 500
"""Most ids one request may exclude."""

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]


class ListQuery(BaseModel):
    """What every list takes: its length and moment, the window, price and exclusions, a cursor."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    LIST_FIELDS: ClassVar[tuple[str, ...]] = ("exclude",)

    n: Count = 10
    at: At = None
    starts_after: Annotated[str | None, Query(
        max_length=64, description="only items starting at or after this time (ISO-8601; an item without a "
                                   "start time, always available, is left out once a window is given)",
        examples=["2026-11-21T00:00:00+08:00"])] = None
    starts_before: Annotated[str | None, Query(
        max_length=64, description="only items starting at or before this time (ISO-8601)",
        examples=["2026-11-22T23:59:59+08:00"])] = None
    free_only: Annotated[bool, Query(description="only free items (is_free)")] = False
    exclude: Annotated[list[ItemId], Query(
        max_length=MAX_EXCLUDE, description="item ids not to list (what the app already shows); repeat the "
                                            "parameter for several; unknown ids are ignored")] = []
    cursor: Annotated[str | None, Query(
        max_length=MAX_CURSOR_LENGTH, description="next_cursor of the previous page: the next page of the same "
                                                  "list (pass the same other parameters)")] = None


class UserListQuery(ListQuery):
    """The query of a user's list, validated in one pass (the constraints FastAPI documents)."""

    lat: Lat = None
    lon: Lon = None
    radius_km: Radius = None
    kind: Annotated[str | None, Query(max_length=64, description="only this kind (event, opera, digital, ...); "
                                                                 "an unknown kind is a 422 listing the kinds")] = None
    category: Annotated[str | None, Query(
        max_length=64, description="only this category (戏曲, 音乐, ...); an unknown one is a 422 listing them")] = None
    region: Annotated[str | None, Query(
        max_length=64, description="the user's district, for the region fallback of an unknown user",
    )] = None
    diversity: Annotated[float, Query(
        ge=0, le=1, description="0 = pure score order; from 0.5 up the list takes categories in turn, drawing "
                                "on every category's best items")] = DEFAULT_DIVERSITY


class RegionListQuery(ListQuery):
    """The query of a district's list."""

    kind: Annotated[str | None, Query(max_length=64, description="only this kind; an unknown kind is a 422 "
                                                                 "listing the kinds")] = None
    age_band: Annotated[str | None, Query(
        max_length=32, examples=["60+"], description="the district's residents of this age band (0-17, 18-34, "
                                                     "35-59, 60+)")] = None


class SimilarListQuery(ListQuery):
    """The query of a similar-items list."""
