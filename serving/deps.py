"""Request dependencies (the app's services, the served model, admin auth) and query parsing.

Dependencies are ``async`` and flat on purpose: none of them blocks, an async dependency
runs on the event loop instead of costing a thread-pool hop, and every nested dependency
costs FastAPI a resolution pass per request. Query checks that need more than a type
(``at``, the place) are plain functions the handlers call.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request, status

from recsys.contract import parse_timestamp
from serving.config import ServingSettings
from serving.erasure import ErasedUsers
from serving.live import LiveInteractions
from serving.metrics import Metrics
from serving.reports import ReportFiles
from serving.segments import SegmentWriter
from serving.state import ModelHolder, ServedModel

MAX_N = 100


@dataclass
class Services:
    """Everything a request may need, built once per app."""

    settings: ServingSettings
    holder: ModelHolder
    live: LiveInteractions
    segments: SegmentWriter
    reports: ReportFiles
    metrics: Metrics
    erased: ErasedUsers


async def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


async def served_model(request: Request) -> ServedModel:
    """The model serving this request: read once, so a concurrent reload cannot change it midway."""
    holder = request.app.state.services.holder
    current = holder.current
    if current is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"no model is loaded yet: {holder.problem or 'starting'}")
    return current


ServedDep = Annotated[ServedModel, Depends(served_model)]

Count = Annotated[int, Query(ge=1, le=MAX_N, description=f"list length, 1..{MAX_N}")]
At = Annotated[str | None, Query(
    max_length=64,
    description="moment to recommend for (ISO-8601; without offset = the platform's time zone); default now",
    examples=["2026-11-20T19:30:00+08:00"],
)]


def moment_of(at: str | None, served: ServedModel) -> float:
    """``at`` as epoch seconds (now if absent); 422 if it is not a time."""
    if at is None:
        return time.time()
    timezone = served.bundle.settings.timezone
    # an unencoded "+" in a query string arrives as a space ("...T19:30:00 08:00")
    moment = parse_timestamp(at, timezone) or parse_timestamp(at.replace(" ", "+"), timezone)
    if moment is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"at: cannot read {at!r} as an ISO-8601 time")
    return moment.timestamp()


@dataclass(frozen=True)
class Place:
    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None


Lat = Annotated[float | None, Query(ge=-90, le=90, allow_inf_nan=False, description="user latitude")]
Lon = Annotated[float | None, Query(ge=-180, le=180, allow_inf_nan=False, description="user longitude")]
Radius = Annotated[float | None, Query(
    ge=0, allow_inf_nan=False, description="keep offline items within this distance (digital items stay)",
)]


def place_of(lat: float | None, lon: float | None, radius_km: float | None) -> Place:
    """The caller's place; 422 for half a coordinate or a radius without a place."""
    if (lat is None) != (lon is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="lat and lon must be given together")
    if radius_km is not None and lat is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="radius_km needs lat and lon")
    return Place(lat, lon, radius_km)


async def require_admin(
    svc: ServicesDep,
    x_api_key: Annotated[str | None, Header(description="the admin key (RECSYS_ADMIN_KEY)")] = None,
) -> None:
    """Admin routes: disabled without a configured key, 401 without a key, 403 with a wrong one."""
    configured = svc.settings.admin_key
    if configured is None or not configured.get_secret_value():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="the admin API is disabled (RECSYS_ADMIN_KEY is not set)")
    if not x_api_key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing X-API-Key header",
                            headers={"WWW-Authenticate": "APIKey"})
    # Header values arrive decoded as latin-1: encoding back gives the bytes the client sent,
    # so a non-ASCII key sent as UTF-8 matches the configured key's UTF-8 bytes.
    if not hmac.compare_digest(x_api_key.encode("latin-1"), configured.get_secret_value().encode("utf-8")):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="wrong API key")


AdminDep = Annotated[None, Depends(require_admin)]
