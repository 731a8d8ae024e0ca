"""The data contract: the three tables the engine accepts and the rules a row must obey.

Interactions, users and items arrive as CSV or Parquet from many providers. This module
is the single statement of their columns, the allowed actions, and the reasons a row is
rejected. The vectorised ingest in ``features`` and the API's per-row validation both
read these definitions, so a rule changes in one place.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

ACTIONS: tuple[str, ...] = ("view", "click", "favorite", "share", "reserve", "attend", "rate", "not_interested",
                            "impression")
"""Every action the engine understands. ``reserve`` is the booking ("点单") signal;
``not_interested`` is the resident's "不感兴趣" on an item (:data:`NEGATIVE_ACTIONS`);
``impression`` records that the app displayed an item of a served list (:data:`EXPOSURE_ACTIONS`)."""

EXPOSURE_ACTIONS: frozenset[str] = frozenset({"impression"})
"""Actions that say an item was shown, not that the resident did anything with it: weight 0 (no
training signal, never engagement, never "already seen"); online metrics count them."""

NEGATIVE_ACTIONS: frozenset[str] = frozenset({"not_interested"})
"""Actions that say the user does not want the item: never engagement, never shown again
(:mod:`recsys.feedback`), and they cancel the user's earlier events on the item in training."""

POSITIVE_ACTIONS: frozenset[str] = frozenset({"favorite", "reserve", "attend"})
"""Actions that count as a positive outcome in evaluation (plus a high rating)."""

HIGH_RATING = 4.0
"""A ``rate`` action with ``value`` at or above this counts as positive."""

AREA_TYPES: tuple[str, ...] = ("urban", "rural")

AGE_BANDS: tuple[str, ...] = ("0-17", "18-34", "35-59", "60+")
"""The age bands a user row may carry (reports and segment popularity group by them)."""

REGION_CODE_PATTERN = r"^\d{6}$"
"""A region code is a 6-digit GB/T 2260 administrative division code, e.g. ``110229``."""

INTERACTION_REQUIRED: tuple[str, ...] = ("user_id", "item_id", "action", "ts")
INTERACTION_COLUMNS: tuple[str, ...] = (*INTERACTION_REQUIRED, "value", "recommendation_id", "position")
"""``recommendation_id``: the served list the interaction came from (a list answer's field);
``position``: the item's 1-based rank in that list. Both optional (:mod:`recsys.attribution`)."""

MAX_POSITION = 10_000
"""Largest list position accepted (a paged list is bounded far below it)."""

USER_REQUIRED: tuple[str, ...] = ("user_id",)
USER_COLUMNS: tuple[str, ...] = ("user_id", "region_code", "age_band", "area_type", "registered_at")

ITEM_REQUIRED: tuple[str, ...] = ("item_id",)
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id", "title", "kind", "category", "tags", "region_code", "venue_id", "lat", "lon",
    "starts_at", "ends_at", "capacity", "provider", "is_free", "hidden", "min_age", "editorial", "series_id",
)
"""``min_age``: the youngest age the item is meant for (a whole number of years, empty = everyone;
:mod:`recsys.audience`); ``editorial``: in the operators' curated pool (:mod:`recsys.editorial`);
``series_id``: items sharing one are versions of one programme (an offline event, its other
sessions, its digital broadcast), offered in each other's place (:mod:`recsys.substitution`)."""

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": INTERACTION_REQUIRED,
    "users": USER_REQUIRED,
    "items": ITEM_REQUIRED,
}
ALL_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": INTERACTION_COLUMNS,
    "users": USER_COLUMNS,
    "items": ITEM_COLUMNS,
}

MAX_ID_LENGTH = 256
"""Ids longer than this are rejected: no provider needs them and they bloat every index."""


class Reason(StrEnum):
    """Why a row went to quarantine. The value is what the ``reason`` column holds."""

    MISSING_FIELD = "missing_required_field"
    BAD_TIME = "unparseable_time"
    UNKNOWN_ACTION = "unknown_action"
    BAD_VALUE = "unparseable_value"
    BAD_COORDINATES = "coordinates_out_of_range"
    ENDS_BEFORE_STARTS = "ends_at_before_starts_at"
    UNKNOWN_ITEM = "item_not_in_catalog"
    ID_TOO_LONG = "id_too_long"
    BAD_AREA_TYPE = "unknown_area_type"
    BAD_NUMBER = "unparseable_number"
    TORN_LINE = "torn_or_invalid_json_line"
    FUTURE_TIME = "future_time"
    RATING_OUT_OF_RANGE = "rating_out_of_range"
    BAD_REGION_CODE = "invalid_region_code"
    BAD_AGE_BAND = "unknown_age_band"


class ContractError(ValueError):
    """A whole input cannot be accepted (unreadable, or a required column missing)."""

    def __init__(self, source: str, message: str, column: str | None = None) -> None:
        self.source = source
        self.column = column
        super().__init__(f"{source}: {message}")


def missing_columns(table: str, present: set[str] | list[str] | tuple[str, ...]) -> list[str]:
    """Required columns of ``table`` that are absent from ``present``."""
    have = set(present)
    return [c for c in REQUIRED_COLUMNS[table] if c not in have]


def check_columns(table: str, source: str, present: set[str] | list[str] | tuple[str, ...]) -> None:
    """Raise :class:`ContractError` naming the file and the first missing required column."""
    missing = missing_columns(table, present)
    if missing:
        raise ContractError(source, f"missing required column {missing[0]!r} for {table}", column=missing[0])


def parse_timestamp(value: Any, default_tz: str = "Asia/Shanghai") -> datetime | None:
    """Parse an ISO-8601 string (with or without offset) or epoch seconds into aware UTC.

    A naive ISO string is read in ``default_tz`` (the platform's local time), because
    providers that omit the offset almost always mean local time. Returns ``None`` when
    the value cannot be read as a time.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 1e11:
            return None
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            if looks_numeric(text):
                return parse_timestamp(float(text), default_tz)
        except ValueError:  # epoch before year 1: not a time either way
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(default_tz))
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. year 1 shifted before datetime.min
        return None


def latest_event_time(max_future_skew_days: float, now: datetime | None = None) -> datetime:
    """The latest event time accepted now: the receiving machine's clock plus the allowed skew.

    A provider's or phone's clock may run a little ahead; an event further ahead than that
    (``9999-12-31`` as "no date", a swapped day and month) is not a real event, and one such
    row would push every window that ends at the latest interaction into the future.
    """
    now = now or datetime.now(UTC)
    try:
        return now + timedelta(days=max_future_skew_days)
    except OverflowError:  # an absurd skew setting: nothing is too far ahead
        return datetime.max.replace(tzinfo=UTC)


def looks_numeric(text: str) -> bool:
    """Whether Python reads ``text`` as a number (then it is epoch seconds, never an ISO time)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def rating_in_scale(value: float | None, rating_min: float, rating_max: float) -> bool:
    """Whether a ``rate`` value lies on the configured scale (a missing value carries no rating)."""
    return value is None or rating_min <= value <= rating_max


def is_positive(action: str, value: float | None) -> bool:
    """Whether an interaction is a positive outcome (for evaluation truth)."""
    if action == "rate":
        return value is not None and value >= HIGH_RATING
    return action in POSITIVE_ACTIONS


Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class InteractionIn(BaseModel):
    """One interaction as the API receives it (same contract as the ingest files)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"user_id": "u123", "item_id": "e42", "action": "reserve",
                      "ts": "2026-11-20T19:30:00+08:00"}],
    })

    user_id: Identifier
    item_id: Identifier
    action: str
    ts: str | float | int
    value: float | None = None
    recommendation_id: Annotated[str | None, Field(max_length=MAX_ID_LENGTH)] = None
    position: Annotated[int | None, Field(ge=1, le=MAX_POSITION, strict=True)] = None

    @field_validator("ts", "value", mode="before")
    @classmethod
    def _not_a_boolean(cls, v: Any) -> Any:
        # JSON true/false would otherwise pass as 1/0: "ts": true became 1970-01-01T00:00:01.
        if isinstance(v, bool):
            raise ValueError("a boolean is not a time or a number")
        return v

    @field_validator("user_id", "item_id")
    @classmethod
    def _strip_id(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be blank")
        return v

    @field_validator("action")
    @classmethod
    def _known_action(cls, v: str) -> str:
        if v not in ACTIONS:
            raise ValueError(f"unknown action {v!r}; expected one of {', '.join(ACTIONS)}")
        return v

    @field_validator("value")
    @classmethod
    def _finite_value(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v

    def timestamp(self, default_tz: str = "Asia/Shanghai") -> datetime:
        moment = parse_timestamp(self.ts, default_tz)
        if moment is None:
            raise ValueError(f"unparseable time {self.ts!r}")
        return moment
