"""The query of a user's list: one pydantic model, validated in one call.

A user's list is the API's hot path, and FastAPI's per-parameter query handling cost as much
CPU as the whole precomputed-candidate lookup (measured). So its query is one model,
validated by :func:`parse_query` with FastAPI's own 422 on bad input, and documented by
:func:`query_parameters` as FastAPI documents a query parameter model.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from serving.deps import At, Count, Lat, Lon, Radius

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
