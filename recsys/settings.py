"""Engine configuration: action weights, time decay, confidence transform, time zone.

Values come from (highest first) explicit arguments, ``RECSYS_*`` environment variables
(``RECSYS_ACTION_WEIGHTS='{"reserve": 6}'``), the ``[engine]`` table of a TOML config, then
the defaults below. Action weights are configuration, never code.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.contract import ACTIONS
from recsys.exposure import ExposureSettings

DEFAULT_ACTION_WEIGHTS: dict[str, float] = {
    "view": 1.0, "click": 1.0, "favorite": 3.0, "share": 3.0, "reserve": 5.0, "attend": 8.0,
}


class AnnSettings(BaseModel):
    """When and how a factor model's items get an approximate inner-product index (recsys.ann)."""

    model_config = ConfigDict(extra="forbid")

    min_items: int = Field(100_000, ge=0, description="build the index when the catalog has at least this many items")
    nlist: int = Field(0, ge=0, description="inverted lists; 0 = 4 x sqrt(indexed items)")
    nprobe: int = Field(0, ge=0, description="lists scanned per query; 0 = nlist / 6")
    overfetch: int = Field(4, ge=2, description="fetch this many times the items needed, to survive the filters")
    max_rounds: int = Field(3, ge=1, description="growing fetches before falling back to exact scoring")
    train_sample: int = Field(100_000, ge=1_000, description="k-means sample (at least 39 per list)")
    build_threads: int = Field(0, ge=0, description="threads while building; 0 = all cores")
    search_threads: int = Field(1, ge=0, description="threads per search; 0 = all cores (requests run in parallel)")
    seed: int = 0


class SeniorWeights(BaseModel):
    """What ``senior_mode`` adds to a 60+ resident's scores (min-max normalised to 0..1 first).

    Each weight is added once for an item that has the quality, so 0.15 lifts a nearby item
    above any item scoring up to 0.15 less; 0 switches a preference off.
    """

    model_config = ConfigDict(extra="forbid")

    nearby: float = Field(0.15, ge=0, description="offline items within nearby_km of the request's place, or in "
                                                  "the resident's district when no place is given")
    nearby_km: float = Field(3.0, gt=0, description="how near is nearby")
    daytime: float = Field(0.1, ge=0, description="items starting between day_start_hour and day_end_hour "
                                                  "(local time), or with no start time")
    day_start_hour: int = Field(8, ge=0, le=23)
    day_end_hour: int = Field(17, ge=1, le=24)
    free: float = Field(0.1, ge=0, description="items marked is_free")
    digital: float = Field(0.1, ge=0, description="digital items (kind digital, or no place): reachable from home")


EditorialList = Literal["users", "regions"]
EDITORIAL_LISTS: tuple[EditorialList, ...] = ("users", "regions")


class ControlSettings(BaseModel):
    """The rules behind the residents' controls and the operators' editorial slots (recsys.controls)."""

    model_config = ConfigDict(extra="forbid")

    not_interested_days: float = Field(
        30.0, ge=0, description="days after a not_interested during which the item's nearest items are demoted")
    not_interested_similar: int = Field(
        3, ge=0, description="how many of the dismissed item's nearest items are demoted (left out of the list)")
    editorial_slots: list[int] = Field(
        default_factory=lambda: [3], description="1-based list positions held for the editorial pool")
    editorial_lists: list[EditorialList] = Field(
        default_factory=lambda: list(EDITORIAL_LISTS), description="which lists have editorial slots")
    editorial_pool_file: str | None = Field(
        None, description="a text file of item ids (one a line) added to the items flagged editorial; read "
                          "at training and kept with the model version")
    declared_boost: float = Field(
        0.5, ge=0, description="added to the 0..1 popularity of items carrying a tag a cold resident declared")
    senior: SeniorWeights = Field(default_factory=SeniorWeights)

    @field_validator("editorial_slots")
    @classmethod
    def _positions(cls, slots: list[int]) -> list[int]:
        if any(slot < 1 for slot in slots):
            raise ValueError("editorial slots are 1-based list positions")
        return sorted(set(slots))


def _check_per_action(name: str, values: dict[str, float]) -> None:
    """A per-action table names only contract actions, with values >= 0 (nan refused too)."""
    unknown = sorted(set(values) - set(ACTIONS))
    if unknown:
        raise ValueError(f"unknown actions in {name}: {unknown}")
    if any(not v >= 0 for v in values.values()):
        raise ValueError(f"{name} must be >= 0")


class EngineSettings(BaseSettings):
    """How raw interactions become confidence, shared by training, serving and reports."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    action_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_ACTION_WEIGHTS))
    rate_weight_per_star: float = Field(1.0, ge=0, description="weight of `rate` = value x this")
    half_life_days: float = Field(30.0, ge=0, description="age at which an event's weight halves; 0 = no decay")
    confidence: Literal["log", "linear", "bm25"] = "log"
    alpha: float = Field(2.0, gt=0, description="confidence = 1 + alpha * log1p(w) (log transform)")
    timezone: str = "Asia/Shanghai"
    max_future_skew_days: float = Field(
        1.0, ge=0, description="event times further ahead of the receiving machine's clock are rejected "
                               "(API) or quarantined as future_time (ingest)")
    # Wide on purpose: any common public scale (0.5-5 stars, 1-5, 1-10, -10..10) fits inside.
    rating_min: float = Field(-10.0, description="lowest `rate` value accepted (else rating_out_of_range)")
    rating_max: float = Field(10.0, description="highest `rate` value accepted (else rating_out_of_range)")
    repeat_after_days: dict[str, float] = Field(
        default_factory=dict, description="actions after which an item may be listed again for the resident, and "
                                          "after how many days (e.g. view = 30, click = 30); an item the resident did "
                                          "any other action with never returns (recsys.repeats); empty: none")
    ann: AnnSettings = Field(default_factory=AnnSettings)
    controls: ControlSettings = Field(default_factory=ControlSettings)
    exposure: ExposureSettings = Field(default_factory=ExposureSettings)
    """Exposure floors of provider groups (the config's ``[exposure]`` table, recsys.exposure)."""

    @field_validator("action_weights")
    @classmethod
    def _known_actions(cls, weights: dict[str, float]) -> dict[str, float]:
        _check_per_action("action_weights", weights)
        merged = dict(DEFAULT_ACTION_WEIGHTS)
        merged.update(weights)
        return merged

    @field_validator("repeat_after_days")
    @classmethod
    def _returning_actions(cls, days: dict[str, float]) -> dict[str, float]:
        _check_per_action("repeat_after_days", days)
        return days

    @model_validator(mode="after")
    def _rating_scale(self) -> EngineSettings:
        if not self.rating_min < self.rating_max:
            raise ValueError(f"rating_min ({self.rating_min}) must be below rating_max ({self.rating_max})")
        return self

    def weight_of(self, action: str, value: float | None = None) -> float:
        """The weight of one interaction (``rate`` scales with its value)."""
        if action == "rate":
            return (value or 0.0) * self.rate_weight_per_star
        return self.action_weights.get(action, 0.0)

    @classmethod
    def from_toml(cls, path: str | Path | None, **overrides: Any) -> EngineSettings:
        """Settings from the ``[engine]`` table of a TOML file (if given) plus overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            with open(path, "rb") as fh:
                values.update(engine_table(tomllib.load(fh)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def engine_table(document: dict[str, Any]) -> dict[str, Any]:
    """A config's ``[engine]`` table with its top-level ``[exposure]`` table folded in (floors are
    policy rather than engine tuning, so they get their own table in the file)."""
    engine = dict(document.get("engine", {}))
    if "exposure" in document:
        engine["exposure"] = document["exposure"]
    return engine


class HealthSettings(BaseSettings):
    """When the newest week of data differs enough from the week before to warn (features.health)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_HEALTH_", extra="ignore")

    window_days: float = Field(7.0, gt=0, description="length of the compared windows, ending at the newest event")
    max_drop: float = Field(0.5, ge=0, le=1, description="warn when a count falls by more than this fraction")
    max_rise: float = Field(2.0, ge=0, description="warn when a count grows by more than this fraction (2 = tripled)")
    max_share_change: float = Field(
        0.05, ge=0, le=1, description="warn when a share (quarantined rows, rural users) moves by more than this")
    min_count: int = Field(30, ge=0, description="counts below this in both windows are too small to judge")
