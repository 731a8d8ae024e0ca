"""Response bodies of the API (pydantic models with examples for the OpenAPI docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recsys.home import CHAMPION, REGISTERED_MODEL

Fallback = Literal["segment_popularity", "region_popularity", "popularity", "not_personalized",
                   "declared_interests"]
"""Why a list is not the model's personal one: ``not_personalized`` = the resident switched
personalisation off (city-wide popularity and editorial picks, as for an anonymous caller);
``declared_interests`` = a resident the model cannot personalise, ranked by the interests they picked."""


class RecommendedItem(BaseModel):
    """One listed item, with what an app needs to render it (no second look-up)."""

    item_id: str
    title: str
    kind: str | None
    category: str | None
    starts_at: str | None = Field(None, description="ISO-8601 start, in the platform's time zone; null = always "
                                                    "available")
    ends_at: str | None = Field(None, description="ISO-8601 end; null = open-ended")
    venue_id: str | None = None
    region_code: str | None = Field(None, description="the item's district (6-digit GB/T 2260)")
    lat: float | None = Field(None, description="null for an item without a place (digital)")
    lon: float | None = None
    is_free: bool = False
    provider: str | None = None
    score: float
    reason: str = Field(description="short plain-language reason shown next to the item")
    editorial: bool = Field(False, description="placed by an editorial slot (the operators' curated pool)")
    full: bool = Field(False, description="the event is at capacity (listed only where full events are kept, marked)")
    distance_km: float | None = Field(None, description="from the request's lat/lon; null without a place, or for an "
                                                        "item without one")


class _ListBody(BaseModel):
    model_version: str
    generated_at: str = Field(description="ISO-8601 UTC time the list was made")
    fallback: Fallback | None = Field(
        None, description="null for a personal list; else the popularity the list falls back to"
    )
    items: list[RecommendedItem]
    next_cursor: str | None = Field(None, description="pass as cursor for the next page of this list; null when "
                                                      "the list ends (a short page, or its bound of 200 items)")
    recommendation_id: str = Field("", description="opaque id of this served list: send it (with the item's "
                                                   "position) with the interactions it leads to")
    variant: str = Field("champion", description="which model of an A/B test served the list: champion or "
                                                 "challenger")


_ITEM_EXAMPLE = {"item_id": "op000123", "title": "《锁麟囊》全本", "kind": "opera", "category": "戏曲",
                 "starts_at": "2026-11-21T19:30:00+08:00", "ends_at": "2026-11-21T22:00:00+08:00",
                 "venue_id": "v0042", "region_code": "110102", "lat": 39.915, "lon": 116.357, "is_free": True,
                 "provider": "市文化馆", "score": 0.87, "reason": "因为你参加过《霸王别姬》", "editorial": False,
                 "full": False, "distance_km": 2.418}


class UserRecommendations(_ListBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user_id": "u000042", "model_version": "7", "generated_at": "2026-11-20T11:30:00+00:00",
        "fallback": None, "items": [_ITEM_EXAMPLE],
    }]})
    user_id: str


class RegionRecommendations(_ListBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "region_code": "110119", "model_version": "7", "generated_at": "2026-11-20T11:30:00+00:00",
        "fallback": None, "items": [{**_ITEM_EXAMPLE, "reason": "本区居民喜爱"}],
    }]})
    region_code: str


class SimilarItems(_ListBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "item_id": "op000088", "model_version": "7", "generated_at": "2026-11-20T11:30:00+00:00",
        "fallback": None, "items": [{**_ITEM_EXAMPLE, "reason": "与《霸王别姬》相似"}],
    }]})
    item_id: str


class Rejection(BaseModel):
    index: int = Field(description="position of the element in the posted list")
    reason: str = Field(description="machine-readable code (recsys.contract.Reason)")
    detail: str = Field(description="what exactly is wrong")


class InteractionsAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "accepted": 2, "rejected": [{"index": 2, "reason": "unknown_action", "detail": "unknown action 'like'"}],
    }]})
    accepted: int
    rejected: list[Rejection]
    pending: int = Field(0, description="of the accepted, interactions on an item not in the catalogue yet: kept, "
                                        "and counted once the item is created (ingest quarantines them if it never is)")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [{
        "version": "7", "alias": CHAMPION, "name": REGISTERED_MODEL, "model": "hybrid",
        "trained_at": "2026-11-16T02:00:00+00:00", "data_end": "2026-11-15 23:58:10+08:00",
        "source": "registry", "degraded": None,
        "loaded_at": "2026-11-16T02:05:00+00:00", "n_users": 1000000, "n_items": 20000,
        "metrics": {"ndcg@10": 0.21, "recall@20": 0.34},
    }]})
    version: str
    alias: str | None
    name: str = Field(description="registered model name (or the bundle directory)")
    model: str | None = Field(description="algorithm, e.g. hybrid")
    trained_at: str | None
    data_end: str | None = Field(None, description="last interaction the model was trained on")
    source: Literal["registry", "directory", "last_known_good"]
    degraded: str | None = Field(description="why the last-known-good copy is served, if it is")
    loaded_at: str
    n_users: int
    n_items: int
    metrics: dict[str, float] = Field(description="key numeric metrics from the bundle manifest")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ready", "version": "7", "reason": None},
        {"status": "degraded", "version": "6", "reason": "no cultural-recsys@champion in the registry ...; "
                                                          "serving the last-known-good copy of version 6"},
    ]})
    status: Literal["ready", "degraded", "unavailable"]
    version: str | None
    reason: str | None


class ReloadResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "reloaded", "version": "8", "previous_version": "7"},
    ]})
    status: Literal["reloaded"]
    version: str
    previous_version: str | None


class RegionReportEntry(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "region_code": "110119", "name": "延庆区", "suppressed": False, "active_users": 812,
        "top_lifts": [{"segment_type": "region_age", "age_band": "60+", "category": "戏曲", "share": 0.31,
                       "lift": 2.6, "users": 120}],
        "gaps": [{"category": "戏曲", "demand_share": 0.22, "supply_share": 0.08, "gap": 0.14,
                  "status": "undersupplied", "supply_items": 4}],
    }]})
    region_code: str
    name: str | None = None
    suppressed: bool = False
    active_users: int | None = None
    top_lifts: list[dict[str, Any]] = Field(default_factory=list)
    gaps: list[dict[str, Any]] = Field(default_factory=list)


class RegionsReport(BaseModel):
    generated_at: str | None
    window: dict[str, Any] | None
    min_users: int | None
    regions: list[RegionReportEntry]


class RegionReport(RegionReportEntry):
    """One region's full block (adds trends and top items)."""

    trends: list[dict[str, Any]] = Field(default_factory=list)
    top_items: list[dict[str, Any]] = Field(default_factory=list)
    report_generated_at: str | None = None
