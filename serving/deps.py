"""Request dependencies (the app's services, the served model, API key scopes) and query parsing.

Dependencies are ``async`` and flat on purpose: none of them blocks, an async dependency
runs on the event loop instead of costing a thread-pool hop, and every nested dependency
costs FastAPI a resolution pass per request. Query checks that need more than a type
(``at``, the place) are plain functions the handlers call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status

from recsys.contract import parse_timestamp
from recsys.controls import ControlsLog
from serving.auth import KEY_FIELD, ApiKey, KeyRing, Scope, authorize
from serving.config import ServingSettings
from serving.erasure import ErasedUsers
from serving.experiment import ExperimentFollower
from serving.exposures import ExposureLog
from serving.list_failures import ListFailureLog
from serving.live import LiveInteractions
from serving.live_items import LiveItems
from serving.metrics import Metrics
from serving.quota import DailyQuota
from serving.redact import public_text
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
    keys: KeyRing
    quota: DailyQuota
    controls: ControlsLog
    """The residents' own choices (:mod:`serving.user_controls`)."""
    exposures: ExposureLog
    """Every served list on record (:mod:`serving.exposures`)."""
    items: LiveItems
    """The catalogue written through the API, and full events (:mod:`serving.live_items`)."""
    experiment: ExperimentFollower
    """The A/B test this process follows and its challenger (:mod:`serving.experiment`)."""
    list_failures: ListFailureLog
    """Failed list requests per variant, on record for the guardrail (:mod:`serving.list_failures`)."""


async def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


async def served_model(request: Request) -> ServedModel:
    """The model serving this request: read once, so a concurrent reload cannot change it midway."""
    holder = request.app.state.services.holder
    current = holder.current
    if current is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"no model is loaded yet: {public_text(holder.problem) or 'starting'}")
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


class RequireScope:
    """Dependency: the request's API key must hold ``scope`` (401 without a key, 403 without the scope).

    ``personal``: the route reads a resident's data, which ``RECSYS_OPEN_PERSONAL_READS``
    may open to callers without a key (an internal network that vouches for its callers).
    The OpenAPI schema documents the key and the scope of every route using one of these
    (:func:`serving.openapi.document_errors`).
    """

    def __init__(self, scope: Scope, *, personal: bool = False) -> None:
        self.scope = scope
        self.personal = personal

    def is_open(self, settings: ServingSettings) -> bool:
        return self.personal and settings.open_personal_reads

    async def __call__(self, request: Request) -> ApiKey | None:
        svc: Services = request.app.state.services
        if self.is_open(svc.settings):
            return request.scope.get(KEY_FIELD)
        return authorize(request.scope, self.scope, svc.keys)


ADMIN = RequireScope(Scope.ADMIN)
WRITE_INTERACTIONS = RequireScope(Scope.WRITE_INTERACTIONS)
WRITE_ITEMS = RequireScope(Scope.WRITE_ITEMS)
PERSONAL_READ = RequireScope(Scope.READ, personal=True)

AdminDep = Annotated[ApiKey, Depends(ADMIN)]
InteractionsWriterDep = Annotated[ApiKey, Depends(WRITE_INTERACTIONS)]
ItemsWriterDep = Annotated[ApiKey, Depends(WRITE_ITEMS)]
PersonalReaderDep = Annotated[ApiKey | None, Depends(PERSONAL_READ)]
